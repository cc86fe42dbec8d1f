/**
 * The live job list (runs in the browser): the server sends each job that appeared or changed
 * as its row, rendered and escaped by the server like the rest of the page; this swaps it in.
 */
export {};

const table = document.querySelector<HTMLTableElement>('table[data-live]');
const body = table?.tBodies[0];
if (table && body) {
  const events = new EventSource(table.dataset.live as string);
  events.onmessage = (e: MessageEvent<string>) => {
    const rows = JSON.parse(e.data) as Array<{ id: string; html: string }>;
    for (const r of rows) {
      const tpl = document.createElement('template');
      tpl.innerHTML = r.html;
      const row = tpl.content.firstElementChild;
      if (!row) continue;
      const old = body.querySelector(`tr[data-job="${CSS.escape(r.id)}"]`);
      if (old) old.replaceWith(row);
      else body.prepend(row);
    }
    document.querySelector('.empty')?.remove();
  };
}
