// Datasets: upload with a progress bar, the validation report (line, field,
// code, message) with the offending record, and previews of normalized
// records rendered with a model's chat template, trained spans marked.

import { api, upload } from './api.js';
import { announce, bytes, h, number, short, table, time } from './util.js';

const RECORD_CONTEXT_LINES = 12;
const TRAINED = /<<<([\s\S]*?)>>>/g;

export async function render(container) {
  const file = h('input', { type: 'file', id: 'dataset-file', accept: '.json,.jsonl,application/json', required: true });
  const name = h('input', { type: 'text', id: 'dataset-name', placeholder: 'file name' });
  const tokenizer = h('input', { type: 'text', id: 'dataset-tokenizer', placeholder: 'e.g. .tunewire/models/tiny', 'aria-describedby': 'tokenizer-help' });
  const progress = h('progress', { id: 'upload-progress', max: '100', value: '0', 'aria-label': 'Upload progress', hidden: true });
  const button = h('button', { type: 'submit', id: 'upload-button' }, 'Upload and validate');
  const report = h('div', { id: 'report' });
  const list = h('div', { id: 'datasets-list' });
  const form = h('form', { class: 'card', id: 'upload-form', onsubmit: send },
    h('h2', {}, 'Upload a dataset'),
    h('p', { class: 'muted' }, 'Alpaca, ShareGPT or chat messages, as JSON or JSONL. It is validated on arrival.'),
    h('div', { class: 'row' },
      h('div', {}, h('label', { for: 'dataset-file' }, 'File'), file),
      h('div', {}, h('label', { for: 'dataset-name' }, 'Name'), name),
      h('div', {}, h('label', { for: 'dataset-tokenizer' }, 'Preview with the chat template of (optional)'), tokenizer)),
    h('p', { class: 'muted', id: 'tokenizer-help' }, 'A model whose tokenizer renders the preview and counts tokens.'),
    h('div', { class: 'row' }, h('div', { style: 'flex:0 0 auto' }, button), h('div', {}, progress)));
  container.append(h('h1', {}, 'Datasets'), form, report, h('h2', {}, 'Stored datasets'), list);

  async function send(event) {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) return;
    const query = { 'metadata.display_name': name.value.trim() || chosen.name };
    if (tokenizer.value.trim()) query['metadata.options.tokenizer'] = tokenizer.value.trim();
    button.disabled = true;
    report.replaceChildren();
    progress.hidden = false;
    progress.value = 0;
    announce(`Uploading ${chosen.name}…`);
    try {
      const dataset = await upload(chosen, query, (fraction) => { progress.value = Math.round(fraction * 100); });
      progress.value = 100;
      announce(`${chosen.name}: ${dataset.report.valid ? 'valid' : 'not valid'}, ${dataset.report.total_samples} record(s).`);
      showReport(report, dataset, chosen);
      await refresh();
    } catch (error) {
      report.replaceChildren(h('p', { class: 'error', role: 'alert' }, error.message));
      announce(error.message);
    } finally {
      button.disabled = false;
    }
  }

  async function refresh() {
    try {
      const reply = await api('GET', '/v1/datasets?page_size=100');
      list.replaceChildren(table(['Name', 'Id', 'Format', 'Records', 'Valid', 'Size', 'Uploaded'], (reply.datasets || []).map((d) => [
        h('button', { type: 'button', class: 'secondary', onclick: () => showReport(report, d, null) }, d.display_name || d.id),
        d.id, short(d.format, 'DATASET_FORMAT_').toLowerCase(), number(d.report?.total_samples || 0),
        d.report?.valid ? 'yes' : 'no', bytes(d.size_bytes), time(d.create_time),
      ]), { caption: 'Stored datasets', numeric: [3] }));
    } catch (error) {
      list.replaceChildren(h('p', { class: 'error' }, error.message));
    }
  }
  await refresh();
}

function showReport(container, dataset, localFile) {
  const r = dataset.report || {};
  const issues = [...(r.errors || []), ...(r.warnings || [])];
  const record = h('pre', { class: 'record', id: 'offending-record', 'aria-live': 'polite' },
    localFile ? 'Choose a problem to see its record.' : 'The record is shown for files uploaded from this page.');
  const rows = issues.map((issue, i) => h('tr', { dataset: { line: issue.line } },
    h('td', {}, short(issue.severity, 'ISSUE_SEVERITY_').toLowerCase()),
    h('td', { class: 'num' }, localFile ? h('button', { type: 'button', class: 'secondary', 'aria-label': `Show the record at line ${issue.line}`, onclick: () => showRecord(record, localFile, issue) }, String(issue.line)) : String(issue.line)),
    h('td', {}, issue.field), h('td', {}, h('code', {}, issue.code)), h('td', {}, issue.message)));
  container.replaceChildren(h('section', { class: 'card', id: 'validation-report', 'aria-labelledby': 'report-h' },
    h('h2', { id: 'report-h' }, `${dataset.display_name || dataset.id}: `, h('span', { class: r.valid ? 'badge SUCCEEDED' : 'badge FAILED', id: 'report-valid' }, r.valid ? 'valid' : 'not valid')),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Id'), h('dd', { id: 'report-dataset-id' }, dataset.id),
      h('dt', {}, 'Format'), h('dd', {}, `${short(r.format, 'DATASET_FORMAT_').toLowerCase()} (${short(r.layout, 'FILE_LAYOUT_').toLowerCase()})`),
      h('dt', {}, 'Records'), h('dd', {}, `${number(r.total_samples || 0)} read, ${number(r.valid_samples || 0)} valid`),
      h('dt', {}, 'Problems'), h('dd', {}, `${number(r.error_count || 0)} error(s), ${number(r.warning_count || 0)} warning(s)`)),
    issues.length ? [h('h2', {}, 'Problems'), table(['Severity', 'Line', 'Field', 'Code', 'Message'], rows, { caption: 'Validation problems', numeric: [1] }), h('h2', {}, 'Record'), record] : '',
    (r.sample_preview || []).length ? [h('h2', {}, 'Preview'), (r.sample_preview || []).map(preview)] : ''));
}

async function showRecord(target, file, issue) {
  const lines = (await file.text()).split('\n');
  const start = Math.max(0, Number(issue.line) - 1);
  const isJsonl = lines.length > 1 && lines[0].trim().startsWith('{');
  const chunk = lines.slice(start, start + (isJsonl ? 1 : RECORD_CONTEXT_LINES));
  target.textContent = `line ${issue.line}${issue.column ? `, column ${issue.column}` : ''}:\n${chunk.join('\n')}`;
}

function preview(p, i) {
  const conversation = p.conversation || {};
  return h('article', { class: 'card preview', 'aria-label': `Preview of record ${i + 1}` },
    h('p', { class: 'muted' }, `line ${conversation.line}`, p.tokens ? ` · ${number(p.tokens)} tokens, ${number(p.trained_tokens)} trained` : ''),
    p.rendered ? h('div', { class: 'rendered' }, rendered(p.rendered))
      : table(['Role', 'Trained', 'Content'], (conversation.messages || []).map((m) => [m.role, m.trainable ? 'yes' : 'no', m.content]), { caption: 'Messages' }),
    p.rendered ? h('p', { class: 'muted' }, h('mark', {}, 'Marked'), ' text is what the loss trains on.') : '');
}

/** The chat template's text with the trained spans (between <<< and >>>) marked. */
function rendered(text) {
  const parts = [];
  let at = 0;
  for (const match of text.matchAll(TRAINED)) {
    parts.push(text.slice(at, match.index), h('mark', { title: 'trained' }, match[1]));
    at = match.index + match[0].length;
  }
  parts.push(text.slice(at));
  return parts;
}
