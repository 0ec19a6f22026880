export { WebDavAdapter, type WebDavAdapterOptions, webdavAdapterFactory } from './webdav-adapter.js';
