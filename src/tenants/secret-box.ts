import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { UserError, errorMessage, errnoCode } from '../lib/errors.js';
import type { SealedSecret, SecretScope } from '../store/store.js';

const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/**
 * Tenants' secrets at rest: AES-256-GCM with a random 96-bit nonce per value, and the secret's
 * scope (tenant, repository, name) as additional data, so a sealed value copied onto another
 * tenant's row does not open. The key is 32 random bytes (base64) in a file only root may read,
 * made on first use; nodes sharing a store need the same file.
 */
export class SecretBox {
  /** A digest of the key: which key sealed a value, without revealing the key. */
  readonly keyId: string;

  private constructor(
    private readonly key: Buffer,
    private readonly file: string,
  ) {
    this.keyId = createHash('sha256').update(key).digest('hex').slice(0, 16);
  }

  /** Opens the key file, creating it (mode 0600) when `create` and it does not exist. */
  static async open(file: string, create: boolean): Promise<SecretBox> {
    if (create) await createKeyFile(file);
    let text: string;
    try {
      const st = await stat(file);
      if ((st.mode & 0o077) !== 0)
        throw new UserError(
          `the secrets key ${file} is readable by others (mode ${(st.mode & 0o777).toString(8)}); run chmod 600 ${file}`,
        );
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (err instanceof UserError) throw err;
      const code = errnoCode(err);
      if (code === 'ENOENT')
        throw new UserError(
          `no secrets key at ${file}: set a secret first (\`boxcar secret set\` creates the key), or point secrets.key_file at this store's key`,
        );
      throw new UserError(`cannot read the secrets key ${file} (${code ?? errorMessage(err)})`);
    }
    const key = Buffer.from(text.trim(), 'base64');
    if (key.length !== KEY_BYTES)
      throw new UserError(
        `the secrets key ${file} is not ${KEY_BYTES} bytes in base64; restore the node's key file (a new key cannot open existing secrets)`,
      );
    return new SecretBox(key, file);
  }

  seal(scope: SecretScope, value: string): SealedSecret {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, nonce);
    cipher.setAAD(additionalData(scope));
    const body = Buffer.concat([cipher.update(value, 'utf8'), cipher.final(), cipher.getAuthTag()]);
    return {
      ...scope,
      keyId: this.keyId,
      nonce: nonce.toString('base64'),
      ciphertext: body.toString('base64'),
    };
  }

  /** The secret's value; a clear error when another key sealed it or it was tampered with. */
  unseal(s: SealedSecret): string {
    const what = `secret ${s.name} of tenant ${s.tenant}${s.repository ? ` (repository ${s.repository})` : ''}`;
    if (s.keyId !== this.keyId)
      throw new UserError(
        `${what} was sealed with another key (${s.keyId}, this node has ${this.keyId} in ${this.file}); give every node the same secrets.key_file`,
      );
    const body = Buffer.from(s.ciphertext, 'base64');
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(s.nonce, 'base64'));
      decipher.setAAD(additionalData(s));
      decipher.setAuthTag(body.subarray(body.length - TAG_BYTES));
      return Buffer.concat([
        decipher.update(body.subarray(0, body.length - TAG_BYTES)),
        decipher.final(),
      ]).toString('utf8');
    } catch (err) {
      throw new UserError(
        `${what} does not open (${errorMessage(err)}): it was changed in the store; set it again`,
      );
    }
  }
}

function additionalData(scope: SecretScope): Buffer {
  return Buffer.from(`boxcar-secret\0${scope.tenant}\0${scope.repository}\0${scope.name}`);
}

/** Writes a new random key, unless the file exists; never replaces one (that would lose every secret). */
async function createKeyFile(file: string): Promise<void> {
  let fh;
  try {
    fh = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return;
    throw new UserError(`cannot create the secrets key ${file} (${errnoCode(err)})`);
  }
  try {
    await fh.writeFile(`${randomBytes(KEY_BYTES).toString('base64')}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
}
