// A new job, from a form or from pasted YAML (the keys `tunewire train`
// takes). The server's pre-flight check answers with field violations
// (spec.lora.rank, ...); each is shown next to its field.

import { api } from './api.js';
import { announce, h } from './util.js';

// Form fields: spec path → [label, input attributes, kind].
const FIELDS = [
  ['display_name', 'Name', { placeholder: 'optional' }, 'text'],
  ['model', 'Base model', { placeholder: 'hub id or a directory on the server', required: true }, 'text'],
  ['method', 'Method', {}, ['lora', 'qlora', 'dora', 'full']],
  ['dataset.dataset_id', 'Dataset', {}, 'dataset'],
  ['validation_fraction', 'Validation fraction', { step: 'any', min: 0, max: 0.5 }, 'number'],
  ['hyperparameters.max_steps', 'Steps', { min: 1 }, 'number'],
  ['hyperparameters.epochs', 'Epochs (when no steps)', { min: 1 }, 'number'],
  ['hyperparameters.batch_size', 'Batch size', { min: 1 }, 'number'],
  ['hyperparameters.learning_rate', 'Learning rate', { step: 'any' }, 'number'],
  ['hyperparameters.max_seq_length', 'Max sequence length', {}, 'number'],
  ['hyperparameters.warmup_steps', 'Warmup steps', { min: 0 }, 'number'],
  ['hyperparameters.learning_rate_schedule', 'Schedule', {}, ['constant', 'cosine', 'linear']],
  ['lora.rank', 'LoRA rank', {}, 'number'],
  ['lora.alpha', 'LoRA alpha', { step: 'any' }, 'number'],
  ['lora.dropout', 'LoRA dropout', { step: 'any' }, 'number'],
  ['evaluation.interval_steps', 'Evaluate every (steps)', {}, 'number'],
  ['report_interval_steps', 'Report every (steps)', {}, 'number'],
  ['checkpointing.interval_steps', 'Checkpoint every (steps)', {}, 'number'],
];
const ENUM_PREFIX = { method: 'TRAINING_METHOD_', 'hyperparameters.learning_rate_schedule': 'LEARNING_RATE_SCHEDULE_' };
const EXAMPLE_YAML = `model: .tunewire/models/tiny
fine_tune_type: lora
lora_parameters: {rank: 8, scale: 2.0, dropout: 0.0}
batch_size: 2
iters: 12
learning_rate: 2e-3
max_seq_length: 256
steps_per_report: 2
`;

const id = (path) => `field-${path.replace(/[^\w]/g, '-')}`;

export async function render(container) {
  const datasets = (await api('GET', '/v1/datasets?page_size=100').catch(() => ({}))).datasets || [];
  const datasetOptions = () => [h('option', { value: '' }, 'choose a dataset'),
    datasets.filter((d) => d.report?.valid).map((d) => h('option', { value: d.id }, `${d.display_name || d.id} (${d.id})`))];
  const summary = h('div', { id: 'violations', role: 'alert' });

  const inputs = {};
  const form = h('form', { id: 'job-form', class: 'card', novalidate: true, onsubmit: submitForm },
    h('div', { class: 'grid2' }, FIELDS.map(([path, label, attrs, kind]) => {
      let input;
      if (Array.isArray(kind)) input = h('select', { id: id(path), name: path }, h('option', { value: '' }, 'default'), kind.map((v) => h('option', { value: v }, v)));
      else if (kind === 'dataset') input = h('select', { id: id(path), name: path, required: true }, datasetOptions());
      else input = h('input', { id: id(path), name: path, type: kind, ...attrs });
      input.dataset.field = path;
      inputs[path] = input;
      return h('div', { class: 'field' }, h('label', { for: id(path) }, label), input, h('div', { class: 'field-error', id: `${id(path)}-error` }));
    })),
    h('button', { type: 'submit', id: 'create-job' }, 'Start job'));

  const yaml = h('textarea', { id: 'job-yaml', name: 'yaml', spellcheck: 'false', 'aria-describedby': 'yaml-help yaml-errors' }, EXAMPLE_YAML);
  const yamlDataset = h('select', { id: 'yaml-dataset' }, datasetOptions());
  const yamlErrors = h('ul', { id: 'yaml-errors', class: 'error' });
  const yamlForm = h('form', { id: 'yaml-form', class: 'card', hidden: true, onsubmit: submitYaml },
    h('p', { class: 'muted', id: 'yaml-help' }, 'The keys of a `tunewire train` config: the job spec\'s own, or an mlx_lm.lora config\'s. The dataset comes from the uploads below, in place of `data`.'),
    h('label', { for: 'job-yaml' }, 'Config (YAML)'), yaml, yamlErrors,
    h('label', { for: 'yaml-dataset' }, 'Dataset'), yamlDataset,
    h('p', {}, h('button', { type: 'submit', id: 'create-job-yaml' }, 'Start job')));

  const tabs = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'How to describe the job' });
  for (const [name, panel] of [['Form', form], ['YAML', yamlForm]]) {
    tabs.append(h('button', { type: 'button', role: 'tab', id: `tab-${name}`, 'aria-selected': String(panel === form), onclick: (e) => {
      for (const tab of tabs.children) tab.setAttribute('aria-selected', String(tab === e.target));
      form.hidden = panel !== form;
      yamlForm.hidden = panel !== yamlForm;
    } }, name));
  }
  container.append(h('h1', {}, 'New job'), tabs, summary, form, yamlForm);

  function clearErrors() {
    summary.replaceChildren();
    yamlErrors.replaceChildren();
    for (const input of Object.values(inputs)) {
      input.removeAttribute('aria-invalid');
      input.removeAttribute('aria-describedby');
      document.getElementById(`${input.id}-error`).textContent = '';
    }
  }

  function specFromForm() {
    const spec = {};
    for (const [path, input] of Object.entries(inputs)) {
      const raw = input.value.trim();
      if (!raw) continue;
      let value = input.type === 'number' ? Number(raw) : raw;
      if (ENUM_PREFIX[path]) value = ENUM_PREFIX[path] + raw.toUpperCase();
      const keys = path.split('.');
      let at = spec;
      for (const key of keys.slice(0, -1)) at = at[key] ??= {};
      at[keys.at(-1)] = value;
    }
    return spec;
  }

  async function create(spec) {
    const reply = await api('POST', '/v1/jobs', { spec, request_id: crypto.randomUUID() });
    announce(`Job ${reply.job.id} created.`);
    location.hash = `#/jobs/${reply.job.id}`;
  }

  async function submitForm(event) {
    event.preventDefault();
    clearErrors();
    try {
      await create(specFromForm());
    } catch (error) {
      const unplaced = [];
      for (const v of error.violations || []) {
        const input = inputs[v.field.replace(/^spec\./, '')];
        if (!input) { unplaced.push(v); continue; }
        const note = document.getElementById(`${input.id}-error`);
        note.textContent = note.textContent ? `${note.textContent}; ${v.description}` : v.description;
        input.setAttribute('aria-invalid', 'true');
        input.setAttribute('aria-describedby', note.id);
      }
      showSummary(error, unplaced);
      form.querySelector('[aria-invalid="true"]')?.focus();
    }
  }

  async function submitYaml(event) {
    event.preventDefault();
    clearErrors();
    let converted;
    try {
      converted = await api('POST', '/console/api/spec', { yaml: yaml.value, dataset_id: yamlDataset.value });
      await create(converted.spec);
    } catch (error) {
      // Server paths (spec.lora.rank) are shown with the YAML key that set them.
      const origins = converted?.origins || {};
      for (const v of error.violations || []) {
        const path = v.field.replace(/^spec\./, '');
        const key = origins[path] && origins[path] !== path ? `${origins[path]} (${path})` : v.field;
        yamlErrors.append(h('li', { dataset: { field: v.field } }, h('strong', {}, key), `: ${v.description}`));
      }
      if (!(error.violations || []).length) yamlErrors.append(h('li', {}, error.message));
      yaml.setAttribute('aria-invalid', 'true');
      yaml.focus();
    }
  }

  function showSummary(error, unplaced) {
    summary.replaceChildren(h('div', { class: 'card' },
      h('p', { class: 'error' }, error.violations?.length ? `The job was refused: ${error.violations.length} problem(s), shown next to their fields.` : error.message),
      unplaced.length ? h('ul', {}, unplaced.map((v) => h('li', {}, h('strong', {}, v.field), `: ${v.description}`))) : ''));
  }
}
