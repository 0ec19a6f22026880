export { HttpAdapter, type HttpAdapterOptions, httpAdapterFactory } from './http-adapter.js';
