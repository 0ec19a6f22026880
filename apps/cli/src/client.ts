/**
 * The HTTP(S) client of the client commands (submit, status, cancel, suspend, resume, workers).
 *
 * node:http/https rather than fetch: Node 20's fetch cannot be given a CA to trust per request
 * (only NODE_EXTRA_CA_CERTS at process start), and an API with a self-signed certificate needs one
 * (client.caFile / DTS_CA_FILE).
 */
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { DtsConfig } from './config.js';
import { UsageError } from './usage.js';

export interface ApiResponse {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  /** The body parsed as JSON (every API answer is JSON), or `{}` when it is not. */
  readonly body: Record<string, unknown>;
}

export interface ApiClient {
  readonly base: string;
  request(method: string, route: string, body?: { contentType: string; text: string }): Promise<ApiResponse>;
}

/** A client of the API named by `client.api`, with `client.token` and `client.caFile`. */
export function apiClient(client: DtsConfig['client']): ApiClient {
  const base = client.api.endsWith('/') ? client.api : `${client.api}/`;
  const ca = client.caFile ? readFileSync(client.caFile, 'utf8') : undefined;
  const agentOptions = { keepAlive: false, ...(ca ? { ca } : {}) };
  return {
    base: client.api.replace(/\/$/, ''),
    request(method, route, body) {
      const url = new URL(route.replace(/^\//, ''), base);
      const headers: http.OutgoingHttpHeaders = { accept: 'application/json' };
      if (client.token) headers.authorization = `Bearer ${client.token}`;
      if (body) {
        headers['content-type'] = body.contentType;
        headers['content-length'] = Buffer.byteLength(body.text);
      }
      const send = url.protocol === 'https:' ? https.request : http.request;
      return new Promise<ApiResponse>((resolve, reject) => {
        const req = send(url, { method, headers, ...agentOptions, timeout: 30_000 }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: Record<string, unknown> = {};
            try {
              const v = JSON.parse(text) as unknown;
              if (v && typeof v === 'object') parsed = v as Record<string, unknown>;
            } catch {
              parsed = text ? { error: { message: text.slice(0, 500) } } : {};
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
          });
        });
        req.on('timeout', () =>
          req.destroy(Object.assign(new Error('no answer within 30 s'), { code: 'ETIMEDOUT' })),
        );
        req.on('error', (err) => reject(unreachable(client.api, err as NodeJS.ErrnoException)));
        req.end(body?.text);
      });
    },
  };
}

/** Why the API cannot be reached, and what to do about it. */
function unreachable(api: string, err: NodeJS.ErrnoException): UsageError {
  const code = err.code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) {
    return new UsageError(
      `the API at ${api} presented a certificate this client does not trust (${code}: ${err.message}); ` +
        'set client.caFile / DTS_CA_FILE to the PEM certificate of its CA (or its self-signed certificate)',
    );
  }
  if (code === 'EPROTO' || /wrong version number|packet length too long/i.test(err.message)) {
    return new UsageError(
      `the API at ${api} does not speak TLS (${err.message}); use an http:// URL for it, or turn on api.tls on the server`,
    );
  }
  if (code === 'ECONNRESET' && api.startsWith('http:')) {
    return new UsageError(
      `the API at ${api} closed the connection (${code}); if it listens with TLS, use https:// in --api / DTS_API`,
    );
  }
  return new UsageError(
    `cannot reach the dts API at ${api} (${code || err.message}); start it with \`dts serve\` or \`dts api\`, or set --api / DTS_API / client.api`,
  );
}

/** The API's error message (`{ error: { code, message } }`), or the status. */
export function errorText(r: ApiResponse): string {
  const e = r.body.error as { code?: string; message?: string } | undefined;
  return e?.message ? `${e.message}${e.code ? ` [${e.code}]` : ''}` : `HTTP ${r.status}`;
}
