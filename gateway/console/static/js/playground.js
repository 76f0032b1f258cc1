// Playground: one prompt to the base model and to a job's adapter, side by side.

import { api, streamPost } from './api.js';
import { announce, h, number } from './util.js';

export async function render(container) {
  const reply = await api('GET', '/v1/jobs?states=JOB_STATE_SUCCEEDED&page_size=100').catch(() => ({}));
  const jobs = reply.jobs || [];
  const job = h('select', { id: 'play-job', required: true },
    jobs.map((j) => h('option', { value: j.id }, `${j.spec?.display_name || j.id} (${j.spec?.model?.split('/').pop()})`)));
  const prompt = h('textarea', { id: 'play-prompt', style: 'min-height:6rem', required: true }, 'What is a learning rate?');
  const maxTokens = h('input', { id: 'play-max', type: 'number', min: 1, max: 4096, value: '48' });
  const base = h('div', { class: 'output', id: 'play-base', 'aria-live': 'polite' });
  const tuned = h('div', { class: 'output', id: 'play-tuned', 'aria-live': 'polite' });
  const button = h('button', { type: 'submit', id: 'play-run' }, 'Generate');
  container.append(h('h1', {}, 'Playground'),
    jobs.length ? '' : h('p', { class: 'muted' }, 'No finished job yet: the playground compares a job\'s adapter with its base model.'),
    h('form', { class: 'card', onsubmit: run },
      h('div', { class: 'row' }, h('div', {}, h('label', { for: 'play-job' }, 'Job'), job),
        h('div', { style: 'flex:0 0 10rem' }, h('label', { for: 'play-max' }, 'Max tokens'), maxTokens)),
      h('label', { for: 'play-prompt' }, 'Prompt'), prompt, h('p', {}, button)),
    h('div', { class: 'grid2' },
      h('section', { class: 'card', 'aria-labelledby': 'base-h' }, h('h2', { id: 'base-h' }, 'Base model'), base),
      h('section', { class: 'card', 'aria-labelledby': 'tuned-h' }, h('h2', { id: 'tuned-h' }, 'With the job\'s adapter'), tuned)));

  async function one(target, request) {
    // Tokens appear as the trainer's inference worker makes them.
    target.textContent = 'generating…';
    let text = '';
    try {
      await streamPost('/v1/generate:stream', request, (message) => {
        if (message.done) {
          const done = message.done;
          target.replaceChildren(done.text, h('p', { class: 'muted' }, `${done.generated_tokens} tokens, ${number(done.tokens_per_second, 3)} tokens/s`));
        } else {
          text += message.text || '';
          target.textContent = text;
        }
      });
    } catch (error) {
      target.replaceChildren(h('span', { class: 'error' }, error.message));
    }
  }

  async function run(event) {
    event.preventDefault();
    const chosen = jobs.find((j) => j.id === job.value);
    if (!chosen) return;
    button.disabled = true;
    const common = { prompt: prompt.value, max_tokens: Number(maxTokens.value) || 48 };
    await Promise.all([one(base, { ...common, model: chosen.spec.model }), one(tuned, { ...common, job_id: chosen.id })]);
    button.disabled = false;
    announce('Both answers are in.');
  }
}
