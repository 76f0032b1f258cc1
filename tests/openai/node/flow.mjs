// The OpenAI fine-tuning flow with the official openai Node SDK, unchanged but for
// baseURL and apiKey: upload, create a job, poll it, page through events and
// checkpoints, chat with the fine-tuned model (plain and streamed), list models.
// Prints one JSON object per step; tests/openai/test_node_sdk.py checks them.
import fs from 'node:fs';
import OpenAI from 'openai';

const { TUNEWIRE_BASE_URL, TUNEWIRE_KEY, TUNEWIRE_MODEL, TUNEWIRE_FILE } = process.env;
const client = new OpenAI({ baseURL: TUNEWIRE_BASE_URL, apiKey: TUNEWIRE_KEY, maxRetries: 0 });
const say = (step, data) => console.log(JSON.stringify({ step, ...data }));

const file = await client.files.create({ file: fs.createReadStream(TUNEWIRE_FILE), purpose: 'fine-tune' });
say('file', { id: file.id, object: file.object, purpose: file.purpose, bytes: file.bytes });

const job = await client.fineTuning.jobs.create({
  model: TUNEWIRE_MODEL,
  training_file: file.id,
  suffix: 'node',
  seed: 3,
  hyperparameters: { n_epochs: 2 },
});
say('created', { id: job.id, status: job.status, n_epochs: job.hyperparameters.n_epochs });

let done = job;
const deadline = Date.now() + 240_000;
while (!['succeeded', 'failed', 'cancelled'].includes(done.status)) {
  if (Date.now() > deadline) throw new Error(`job ${job.id} still ${done.status}`);
  await new Promise((resolve) => setTimeout(resolve, 500));
  done = await client.fineTuning.jobs.retrieve(job.id);
}
say('done', { status: done.status, fine_tuned_model: done.fine_tuned_model, trained_tokens: done.trained_tokens, error: done.error });

const events = [];
for await (const event of client.fineTuning.jobs.listEvents(job.id, { limit: 2 })) events.push(event);
say('events', { count: events.length, ids: events.map((e) => e.id), created: events.map((e) => e.created_at), first: events[0].message });

const checkpoints = [];
for await (const c of client.fineTuning.jobs.checkpoints.list(job.id, { limit: 1 })) checkpoints.push(c);
say('checkpoints', { steps: checkpoints.map((c) => c.step_number), models: checkpoints.map((c) => c.fine_tuned_model_checkpoint), train_loss: checkpoints.map((c) => c.metrics.train_loss) });

const messages = [{ role: 'user', content: 'What is LoRA?' }];
const reply = await client.chat.completions.create({ model: done.fine_tuned_model, messages, max_tokens: 6, temperature: 0 });
say('chat', { object: reply.object, model: reply.model, content: reply.choices[0].message.content, finish: reply.choices[0].finish_reason, completion_tokens: reply.usage.completion_tokens });

const stream = await client.chat.completions.create({ model: done.fine_tuned_model, messages, max_tokens: 6, temperature: 0, stream: true });
let text = '';
let chunks = 0;
for await (const chunk of stream) {
  chunks += 1;
  for (const choice of chunk.choices) text += choice.delta?.content ?? '';
}
say('stream', { chunks, content: text });

const models = [];
for await (const m of client.models.list()) models.push(m.id);
say('models', { ids: models });

try {
  await client.fineTuning.jobs.retrieve('job-does-not-exist');
  say('error', { status: 0 });
} catch (error) {
  say('error', { status: error.status, type: error.type ?? error.error?.type, name: error.constructor.name });
}
