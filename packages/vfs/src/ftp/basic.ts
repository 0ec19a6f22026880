import { createRequire } from 'node:module';

type BasicFtp = typeof import('basic-ftp');

let loaded: BasicFtp | undefined;

/**
 * basic-ftp, loaded when the first FTP connection is made rather than with the package: it pulls in
 * node:tls and its own modules, ~30 ms of every dts process's start-up (measured: importing the ftp
 * adapter 45 ms, the http one 16), which a copy that speaks no FTP need not pay.
 */
export function basicFtp(): BasicFtp {
  loaded ??= createRequire(import.meta.url)('basic-ftp') as BasicFtp;
  return loaded;
}

/** Whether `err` is basic-ftp's FTPError (a server's error reply), without loading basic-ftp for any other error. */
export function isFtpError(err: unknown): err is import('basic-ftp').FTPError {
  return err instanceof Error && err.name === 'FTPError' && err instanceof basicFtp().FTPError;
}
