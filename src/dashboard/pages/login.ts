import { html } from '../html.js';
import { page } from './layout.js';

export function loginPage(error?: string): string {
  return page({
    title: 'Log in',
    body: html`<h1>Log in</h1>
      <form class="login" method="post" action="/ui/login">
        ${error ? html`<p class="error" role="alert" id="login-error">${error}</p>` : ''}
        <label for="token">API token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="current-password"
          required
          ${error ? html`aria-describedby="login-error"` : ''}
        />
        <p class="sub">
          A tenant's token (<code>boxcar token create --tenant NAME</code>) shows its jobs; an operator's
          shows the fleet.
        </p>
        <button type="submit">Log in</button>
      </form>`,
  });
}

/** A page for what went wrong: not found, or the server's own failure with its log reference. */
export function messagePage(title: string, message: string): string {
  return page({
    title,
    body: html`<h1>${title}</h1>
      <p>${message}</p>
      <p><a href="/">Back to the jobs</a></p>`,
  });
}
