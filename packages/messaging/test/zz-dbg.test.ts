import { it } from 'vitest';
import { AmqpBroker } from '../src/index.js';
const log = (lvl: string) => (f: Record<string, unknown>, m: string) => console.log(lvl, m, JSON.stringify(f));
it('dbg', async () => {
  const b = await AmqpBroker.connect({ url: 'amqp://guest:guest@127.0.0.1:5672/', prefix: `dbg${Date.now()}`, logger: { debug: log('D'), info: log('I'), warn: log('W'), error: log('E') } });
  for (let i = 0; i < 3; i++) await b.publishJob({ pool: 'p', body: Buffer.from(`${i}`), priority: ((i % 5) + 1) as 1 });
  const order: string[] = [];
  await b.consumeJobs('p', async (d) => { order.push(d.body.toString()); console.log('got', d.body.toString()); console.log('ack', await d.ack()); });
  await new Promise((r) => setTimeout(r, 1500));
  console.log(order, await b.stats('p'));
  await b.close();
});
