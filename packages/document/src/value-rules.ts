/**
 * What each value must look like, in words and with an example: shared by the XML and JSON messages,
 * so both forms explain a bad value the same way.
 */

export interface ValueRule {
  /** Completes "it must be …". */
  readonly is: string;
  readonly example: string;
}

const VALUE_RULES: Readonly<Record<string, ValueRule>> = {
  maxAttempts: { is: 'a whole number from 1 to 100', example: '3' },
  priority: { is: 'a whole number from 1 (lowest) to 5 (highest)', example: '3' },
  concurrency: { is: 'a whole number from 1 to 256', example: '4' },
  creationFlag: { is: 'one of overwrite, dontOverwrite, append', example: 'dontOverwrite' },
  checksum: { is: 'one of sha256, md5, adler32', example: 'sha256' },
  expectedChecksum: {
    is: 'hexadecimal digits (0-9, a-f)',
    example: 'the output of sha256sum, without the file name',
  },
  deleteSource: { is: 'true or false', example: 'true' },
  startNotBefore: { is: 'an ISO 8601 date-time with a time zone', example: '2026-11-22T22:00:00Z' },
  endNoLaterThan: { is: 'an ISO 8601 date-time with a time zone', example: '2026-11-23T06:00:00Z' },
  stayAliveTime: { is: 'an ISO 8601 duration', example: 'P7D (7 days) or PT12H (12 hours)' },
  dataUrl: { is: 'a URL', example: 'sftp://host:22/data/run42/' },
  hostKeyFingerprint: {
    is: 'an SSH host key fingerprint as `ssh-keygen -l` prints it',
    example: 'SHA256: followed by 43 base64 characters, or MD5: followed by 16 colon-separated hex pairs',
  },
  include: { is: 'a glob pattern', example: '**/*.h5' },
  exclude: { is: 'a glob pattern', example: 'tmp/**' },
  username: { is: 'a user name', example: 'beamline' },
  privateKey: { is: 'a private key', example: 'the text of a PEM or OpenSSH key file' },
  token: { is: 'a bearer token', example: 'the token your server issued' },
  '@id': { is: 'an id: a letter or _, then letters, digits, _, . or -', example: 'run42' },
  '@idRef': { is: 'an id: a letter or _, then letters, digits, _, . or -', example: 'run42' },
  '@name': { is: 'a name: a letter or _, then letters, digits or _', example: 'pool' },
};

/**
 * The rule for an element or member (`MaxAttempts` or `maxAttempts`) or an attribute (`@id`; in JSON
 * the `id` and `idRef` members and property names use the attribute rules).
 */
export function valueRule(key: string): ValueRule | undefined {
  const k = key.startsWith('@') ? key : `${key.charAt(0).toLowerCase()}${key.slice(1)}`;
  return Object.hasOwn(VALUE_RULES, k) ? VALUE_RULES[k] : undefined;
}
