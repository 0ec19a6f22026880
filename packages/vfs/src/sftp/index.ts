export { SftpAdapter, type SftpAdapterOptions, sftpAdapterFactory } from './sftp-adapter.js';
