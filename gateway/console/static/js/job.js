// A job: its state and progress, live charts from the event stream (SSE with
// the session cookie; the browser resumes after a cut with Last-Event-ID),
// details, checkpoints with the best marked, the error and its field
// violations, the log tail, cancel.

import { api, watch } from './api.js';
import { MetricChart } from './charts.js';
import { TERMINAL, announce, bytes, duration, h, method, number, progressBar, short, state, table, time } from './util.js';

const LOG_LINES = 200;
const MB = 1 << 20;

export async function render(container, { params: [jobId] }) {
  const header = h('div', { class: 'row' });
  const summary = h('div', { class: 'card', id: 'job-summary' });
  const charts = {
    loss: new MetricChart('chart-loss', 'Loss', ['train', 'validation']),
    lr: new MetricChart('chart-lr', 'Learning rate', ['learning rate']),
    speed: new MetricChart('chart-speed', 'Throughput', ['tokens/s'], ' tokens/s'),
    memory: new MetricChart('chart-memory', 'Memory', ['peak', 'resident'], ' MiB'),
  };
  const details = h('div', { class: 'grid2' });
  const errorBox = h('div', { id: 'job-error' });
  const checkpoints = h('div', { class: 'card', id: 'checkpoints' });
  const logBox = h('div', { class: 'log', id: 'log', role: 'log', 'aria-label': 'Log tail', tabindex: '0' });
  container.append(header, errorBox, summary,
    h('div', { class: 'charts' }, Object.values(charts).map((c) => c.element)),
    details, h('h2', {}, 'Checkpoints'), checkpoints, h('h2', {}, 'Log'), logBox);

  let job = null;
  let lastSequence = 0;
  let refreshing = null;

  async function load() {
    try {
      job = (await api('GET', `/v1/jobs/${encodeURIComponent(jobId)}`)).job;
    } catch (error) {
      header.replaceChildren(h('h1', {}, jobId));
      summary.replaceChildren(h('p', { class: 'error', role: 'alert' }, error.message));
      return;
    }
    drawHeader();
    drawSummary();
    drawDetails();
    drawError();
  }
  // Progress changes with every metrics event: refresh the job at most once a second.
  function refreshSoon() {
    refreshing ??= setTimeout(async () => {
      refreshing = null;
      await load();
    }, 1000);
  }

  function drawHeader() {
    const cancel = h('button', { type: 'button', class: 'danger', id: 'cancel-job', onclick: cancelJob }, 'Cancel job');
    header.replaceChildren(
      h('h1', {}, job.spec?.display_name || job.id, ' ', h('span', { class: `badge ${state(job)}`, id: 'job-state' }, state(job).toLowerCase())),
      h('div', { style: 'flex:0 0 auto' }, TERMINAL.has(state(job)) ? '' : cancel),
    );
  }

  async function cancelJob(event) {
    event.target.disabled = true;
    try {
      job = (await api('POST', `/v1/jobs/${encodeURIComponent(jobId)}:cancel`, {})).job;
      announce(`Job ${jobId} is ${state(job).toLowerCase()}.`);
      drawHeader();
    } catch (error) {
      announce(error.message);
      event.target.disabled = false;
    }
  }

  function drawSummary() {
    const p = job.progress || {};
    summary.replaceChildren(h('dl', { class: 'facts' },
      h('dt', {}, 'Progress'), h('dd', {}, progressBar(p.percent, 'Job progress'),
        ` step ${number(p.step || 0)} of ${number(p.total_steps || 0)} (${number(p.percent || 0, 3)}%), epoch ${number(p.epoch || 0, 3)}`),
      h('dt', {}, 'Time left'), h('dd', { id: 'eta' }, TERMINAL.has(state(job)) ? 'done' : p.eta ? duration(p.eta) : 'estimating'),
      h('dt', {}, 'Latest loss'), h('dd', {}, job.latest_metrics?.step ? number(job.latest_metrics.loss) : '–'),
      h('dt', {}, 'Validation loss'), h('dd', {}, job.latest_evaluation?.step ? number(job.latest_evaluation.validation_loss) : '–'),
      h('dt', {}, 'Created'), h('dd', {}, time(job.create_time), job.owner ? ` by ${job.owner}` : ''),
    ));
  }

  function drawDetails() {
    const spec = job.spec || {};
    const lora = job.lora_details || {};
    const data = job.dataset_details || {};
    const artifacts = job.artifacts || {};
    details.replaceChildren(
      h('section', { class: 'card', 'aria-labelledby': 'training-h' }, h('h2', { id: 'training-h' }, 'Training'), h('dl', { class: 'facts' },
        h('dt', {}, 'Model'), h('dd', {}, spec.model),
        h('dt', {}, 'Method'), h('dd', {}, method(spec).toLowerCase()),
        h('dt', {}, 'Batch size'), h('dd', {}, spec.hyperparameters?.batch_size),
        h('dt', {}, 'Learning rate'), h('dd', {}, number(spec.hyperparameters?.learning_rate)),
        h('dt', {}, 'Sequence length'), h('dd', {}, spec.hyperparameters?.max_seq_length),
        h('dt', {}, 'Adapter'), h('dd', {}, lora.rank ? `rank ${lora.rank}, alpha ${number(lora.alpha)}, ${number(lora.trainable_parameters)} of ${number(lora.total_parameters)} parameters (${number(lora.trainable_percent, 3)}%), ${(lora.target_modules || []).join(', ')}` : '–'),
        h('dt', {}, 'Artifacts'), h('dd', {}, (artifacts.adapter_path || artifacts.model_path) && ['SUCCEEDED', 'CANCELLED'].includes(state(job))
          ? h('a', { href: `/v1/jobs/${encodeURIComponent(job.id)}/artifact`, download: `${job.id}.tar`, id: 'download-artifact' },
            artifacts.model_path ? 'Download the model (.tar)' : 'Download the adapter (.tar)')
          : 'when the job has finished'),
      )),
      h('section', { class: 'card', 'aria-labelledby': 'data-h' }, h('h2', { id: 'data-h' }, 'Data'), h('dl', { class: 'facts' },
        h('dt', {}, 'Dataset'), h('dd', {}, data.dataset_id || spec.dataset?.dataset_id || spec.dataset?.path || ''),
        h('dt', {}, 'Format'), h('dd', {}, data.format || ''),
        h('dt', {}, 'Training records'), h('dd', {}, number(data.train_records || 0)),
        h('dt', {}, 'Validation records'), h('dd', {}, number(data.validation_records || 0)),
        h('dt', {}, 'Training tokens'), h('dd', {}, number(data.train_tokens || 0)),
      )),
    );
  }

  function drawError() {
    const error = job.error;
    if (!error?.message) return errorBox.replaceChildren();
    const violations = (error.details || []).filter((d) => d['@type']?.endsWith('BadRequest')).flatMap((d) => d.field_violations || []);
    const reason = (error.details || []).find((d) => d['@type']?.endsWith('ErrorInfo'))?.reason;
    errorBox.replaceChildren(h('div', { class: 'card', role: 'alert' },
      h('h2', { class: 'error' }, 'The job failed', reason ? ` (${reason})` : ''), h('p', {}, error.message),
      violations.length ? table(['Field', 'Problem'], violations.map((v) => [v.field, v.description]), { caption: 'Field violations' }) : ''));
  }

  async function drawCheckpoints() {
    try {
      const reply = await api('GET', `/v1/jobs/${encodeURIComponent(jobId)}/checkpoints`);
      const rows = (reply.checkpoints || []).map((c) => [
        c.best ? h('span', { class: 'best', title: 'best by validation loss' }, `★ ${c.step}`, h('span', { class: 'sr-only' }, ' (best)')) : String(c.step),
        number(c.train_loss), c.validation_loss === undefined ? '' : number(c.validation_loss), bytes(c.size_bytes), time(c.create_time),
        h('a', { href: `/v1/jobs/${encodeURIComponent(jobId)}/artifact?kind=ARTIFACT_KIND_CHECKPOINT&checkpoint_step=${c.step}`, download: `${jobId}-step-${c.step}.tar`, 'aria-label': `Download the checkpoint at step ${c.step}` }, 'download'),
      ]);
      checkpoints.replaceChildren(rows.length ? table(['Step', 'Train loss', 'Validation loss', 'Size', 'Written', ''], rows, { caption: 'Checkpoints', numeric: [1, 2, 3] }) : h('p', { class: 'muted' }, 'No checkpoint yet.'));
    } catch (error) {
      checkpoints.replaceChildren(h('p', { class: 'error' }, error.message));
    }
  }

  function log(level, text) {
    logBox.append(h('div', { class: level }, text));
    while (logBox.childElementCount > LOG_LINES) logBox.firstElementChild.remove();
    logBox.scrollTop = logBox.scrollHeight;
  }

  // Events arrive once each; a replay (reconnect, reload) starts after the last
  // sequence, and the charts key points by step in any case.
  const seen = (event) => {
    const sequence = Number(event.sequence);
    if (sequence <= lastSequence) return true;
    lastSequence = sequence;
    return false;
  };
  const handlers = {
    training_metrics(m, event) {
      if (seen(event)) return;
      charts.loss.add(0, m.step, m.loss);
      charts.lr.add(0, m.step, m.learning_rate);
      charts.speed.add(0, m.step, m.tokens_per_second);
      charts.memory.add(0, m.step, Number(m.peak_memory_bytes || 0) / MB);
      charts.memory.add(1, m.step, Number(m.rss_bytes || 0) / MB);
      refreshSoon();
    },
    evaluation_metrics(m, event) {
      if (seen(event)) return;
      charts.loss.add(1, m.step, m.validation_loss);
    },
    checkpoint_saved(c, event) {
      if (seen(event)) return;
      drawCheckpoints();
    },
    log(line, event) {
      if (seen(event)) return;
      log(short(line.level, 'LOG_LEVEL_'), line.message);
    },
    state_change(change, event) {
      if (seen(event)) return;
      log('INFO', `state ${short(change.state, 'JOB_STATE_').toLowerCase()}${change.reason ? `: ${change.reason}` : ''}`);
      announce(`Job ${jobId}: ${short(change.state, 'JOB_STATE_').toLowerCase()}`);
      load();
      drawCheckpoints();
    },
    error(status) {
      log('ERROR', `event stream: ${status.message}`);
    },
  };

  await load();
  await drawCheckpoints();
  const stop = job ? watch(jobId, handlers) : () => {};
  return () => {
    stop();
    clearTimeout(refreshing);
    Object.values(charts).forEach((c) => c.destroy());
  };
}
