// End-to-end: the official `openai` npm client against llmgate backed by mockllm.
// Started by run.sh, which sets LLMGATE_E2E_URL, LLMGATE_E2E_KEY and LLMGATE_E2E_MOCK_URL.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';

const URL = process.env.LLMGATE_E2E_URL;
const KEY = process.env.LLMGATE_E2E_KEY;
const MOCK_URL = process.env.LLMGATE_E2E_MOCK_URL;
const MODEL = 'mock-model';
assert.ok(URL && KEY, 'run through tests/e2e/run.sh');

const client = new OpenAI({ baseURL: `${URL}/v1`, apiKey: KEY, maxRetries: 0, timeout: 20_000 });
const expected = (n) => Array.from({ length: n }, (_, i) => `tok${i} `).join('');
const user = (content) => [{ role: 'user', content }];

test('models.list returns the configured models', async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.object, 'model');
    ids.push(m.id);
  }
  assert.deepEqual(ids.sort(), ['mock-model', 'narrow-model', 'other-model']);
});

test('models.retrieve', async () => {
  const m = await client.models.retrieve(MODEL);
  assert.equal(m.id, MODEL);
  assert.equal(m.object, 'model');
  await assert.rejects(client.models.retrieve('no-such-model'),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
});

test('chat completion, non-stream', async () => {
  const { data: r, response } = await client.chat.completions
    .create({ model: MODEL, messages: user('hello e2e'), max_tokens: 6 })
    .withResponse();
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, expected(6));
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(response.headers.get('x-request-id'), 'X-Request-ID');
  assert.equal(r._request_id, response.headers.get('x-request-id'));
});

test('chat completion, stream: every delta, in order', async () => {
  const stream = await client.chat.completions.create({
    model: MODEL, messages: user('stream e2e'), max_tokens: 8, stream: true,
  });
  let chunks = 0;
  let content = '';
  let finish = null;
  for await (const chunk of stream) {
    chunks += 1;
    assert.equal(chunk.object, 'chat.completion.chunk');
    content += chunk.choices[0]?.delta?.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(content, expected(8));
  assert.equal(chunks, 8 + 1, '8 content chunks and a finish chunk ([DONE] is not a chunk)');
  assert.equal(finish, 'stop');
});

test('chat completion, stream arrives incrementally', async () => {
  const t0 = performance.now();
  const stream = await client.chat.completions.create({
    model: MODEL, messages: user('slow e2e'), max_tokens: 5, stream: true,
    mock: { ttft_ms: 0, itl_ms: 200, tokens: 5 },
  });
  const arrivals = [];
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta?.content) arrivals.push(performance.now() - t0);
  }
  assert.equal(arrivals.length, 5);
  assert.ok(arrivals[4] - arrivals[0] > 600, `chunks were buffered: ${arrivals.map(Math.round)}`);
});

test('stream body identical to the engine\'s', { skip: !MOCK_URL }, async () => {
  const body = JSON.stringify({ model: MODEL, messages: user('bytes e2e'), stream: true, max_tokens: 4 });
  const direct = await fetch(`${MOCK_URL}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body,
  });
  const stream = await client.chat.completions.create(JSON.parse(body)).asResponse();
  assert.equal(stream.headers.get('content-type')?.split(';')[0], 'text/event-stream');
  assert.equal(await stream.text(), await direct.text());
});

test('completions, non-stream and stream', async () => {
  const r = await client.completions.create({ model: MODEL, prompt: 'complete e2e', max_tokens: 3 });
  assert.equal(r.choices[0].text, expected(3));
  const stream = await client.completions.create({ model: MODEL, prompt: 'complete e2e', max_tokens: 3, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  assert.equal(text, expected(3));
});

test('embeddings, float', async () => {
  const r = await client.embeddings.create({ model: MODEL, input: ['one', 'two'], encoding_format: 'float' });
  assert.equal(r.object, 'list');
  assert.equal(r.data.length, 2);
  for (const [i, d] of r.data.entries()) {
    assert.equal(d.index, i);
    assert.ok(Array.isArray(d.embedding) && d.embedding.length > 0);
    assert.ok(d.embedding.every((x) => typeof x === 'number' && Number.isFinite(x)));
  }
});

test('embeddings, SDK default (base64)', async () => {
  const r = await client.embeddings.create({ model: MODEL, input: 'one' });
  const f = await client.embeddings.create({ model: MODEL, input: 'one', encoding_format: 'float' });
  assert.equal(r.data.length, 1);
  assert.equal(r.data[0].embedding.length, f.data[0].embedding.length);
  r.data[0].embedding.forEach((x, i) => assert.ok(Math.abs(x - f.data[0].embedding[i]) < 1e-6, `dim ${i}`));
});

test('unknown model -> NotFoundError 404 model_not_found', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: user('x') }),
    (e) => {
      assert.ok(e instanceof OpenAI.NotFoundError, `got ${e?.constructor?.name}: ${e}`);
      assert.equal(e.status, 404);
      assert.equal(e.code, 'model_not_found');
      assert.equal(e.type, 'invalid_request_error');
      assert.ok(e.requestID, 'request id on the error');
      return true;
    });
});

test('bad key -> AuthenticationError 401 invalid_api_key', async () => {
  const bad = new OpenAI({ baseURL: `${URL}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
  for (const call of [
    () => bad.chat.completions.create({ model: MODEL, messages: user('x') }),
    () => bad.chat.completions.create({ model: MODEL, messages: user('x'), stream: true }),
    () => bad.models.list(),
  ]) {
    await assert.rejects(call(), (e) => {
      assert.ok(e instanceof OpenAI.AuthenticationError, `got ${e?.constructor?.name}: ${e}`);
      assert.equal(e.status, 401);
      assert.equal(e.code, 'invalid_api_key');
      return true;
    });
  }
});

test('bad request -> BadRequestError 400', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: MODEL, messages: user('x'), stream: 'yes' }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.code === 'invalid_request');
});

test('engine error relayed -> InternalServerError 503', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: MODEL, messages: user('x'), mock: { status: 503 } }),
    (e) => e instanceof OpenAI.InternalServerError && e.status === 503);
});

test('50 concurrent streams', async () => {
  const one = async (i) => {
    const s = await client.chat.completions.create({
      model: MODEL, messages: user(`concurrent ${i}`), max_tokens: 10, stream: true,
      mock: { ttft_ms: 50, itl_ms: 10, tokens: 10 },
    });
    let content = '';
    for await (const c of s) content += c.choices[0]?.delta?.content ?? '';
    return content;
  };
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => one(i)));
  for (const c of results) assert.equal(c, expected(10));
});

test('30 clients at a model with 2 slots: the waiters park, each gets its own answer', async () => {
  const metric = async (name) => {
    const m = (await (await fetch(`${URL}/metrics`)).text())
      .match(new RegExp(`^${name} (\\d+)$`, 'm'));
    assert.ok(m, `${name} missing`);
    return Number(m[1]);
  };
  const before = await metric('llmgate_requests_parked_total');
  const one = async (i, ttft = 60) => {
    const tokens = 1 + (i % 7);
    const req = { model: 'narrow-model', messages: user(`narrow ${i}`), max_tokens: tokens,
                  mock: { ttft_ms: ttft, itl_ms: 2, tokens } };
    if (i % 2) {
      let content = '';
      const s = await client.chat.completions.create({ ...req, stream: true });
      for await (const c of s) content += c.choices[0]?.delta?.content ?? '';
      return [tokens, content];
    }
    const r = await client.chat.completions.create(req);
    return [tokens, r.choices[0].message.content];
  };
  // Parking is decided when a body is read while someone already waits: hold both slots, then
  // one waiter, each seen by the gateway before the next is sent, so that every one of the
  // crowd arrives at a non-empty queue whatever the machine's speed (sent together, the
  // waiter may take a slot first and leave the queue empty when its short answer ends).
  const until = async (name, n) => {
    const deadline = Date.now() + 5000;
    while ((await metric(name)) < n) {
      assert.ok(Date.now() < deadline, `${name} never reached ${n}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const first = [one(0, 2000), one(1, 2000)];
  await until('llmgate_inflight', 2);
  first.push(one(2));
  await until('llmgate_queued', 1);
  const crowd = Array.from({ length: 27 }, (_, i) => one(i + 3));
  const results = await Promise.all([...first, ...crowd]);
  for (const [tokens, content] of results) assert.equal(content, expected(tokens));
  const parked = (await metric('llmgate_requests_parked_total')) - before;
  assert.ok(parked >= 27, `parked: ${parked}`);
});

test('abort a stream mid-way', { skip: !MOCK_URL }, async () => {
  const stats = async () => (await fetch(`${MOCK_URL}/mock/stats`)).json();
  const before = await stats();
  const stream = await client.chat.completions.create({
    model: MODEL, messages: user('abort e2e'), stream: true, mock: { ttft_ms: 0, itl_ms: 100, tokens: 100 },
  });
  let n = 0;
  for await (const _ of stream) { // eslint-disable-line no-unused-vars
    if (++n === 3) break; // break aborts the request
  }
  const deadline = Date.now() + 5000;
  let s = await stats();
  while ((s.aborted <= before.aborted || s.active !== 0) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    s = await stats();
  }
  assert.ok(s.aborted > before.aborted && s.active === 0, `upstream not cancelled: ${JSON.stringify(s)}`);
});

test('429 with retry-after-ms: the SDK waits as told and retries into a free slot', async () => {
  // key "slot" may run one request at a time; a slow one holds it for 1.5 s
  const slot = new OpenAI({ baseURL: `${URL}/v1`, apiKey: process.env.LLMGATE_E2E_SLOT_KEY,
                            maxRetries: 3, timeout: 20_000 });
  const count429 = async () => {
    const m = (await (await fetch(`${URL}/metrics`)).text())
      .match(/^llmgate_http_responses_total\{code="429"\} (\d+)$/m);
    return m ? Number(m[1]) : 0;
  };
  const before = await count429();
  const holder = slot.chat.completions.create({ model: MODEL, messages: user('holder'),
                                                mock: { ttft_ms: 1500, itl_ms: 0, tokens: 2 } });
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  const { data, response } = await slot.chat.completions
    .create({ model: MODEL, messages: user('retried') }).withResponse();
  const took = Date.now() - t0;
  assert.equal(response.status, 200);
  assert.ok(data.choices[0].message.content.length > 0);
  const refused = (await count429()) - before;
  // refused 429 (Retry-After 1 s, retry-after-ms 1000) until the holder ended, then admitted
  assert.ok(refused >= 1 && refused <= 3, `429s: ${refused}`);
  assert.ok(took >= 1000 * refused - 50, `retried after ${took} ms for ${refused} refusals`);
  await holder;
});
