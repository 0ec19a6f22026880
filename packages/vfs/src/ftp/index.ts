export { FtpAdapter, type FtpAdapterOptions, ftpAdapterFactory } from './ftp-adapter.js';
