// Small DOM and formatting helpers. Text always goes in as text nodes, never as
// HTML: names, messages and log lines come from users.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'class') element.className = value;
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else if (name === 'value') element.value = value;
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** "JOB_STATE_RUNNING" → "RUNNING" (the enum's prefix dropped). */
export function short(name, prefix) {
  return name && name.startsWith(prefix) ? name.slice(prefix.length) : name || '';
}

export const state = (job) => short(job.state, 'JOB_STATE_');
export const method = (spec) => short(spec?.method, 'TRAINING_METHOD_') || 'LORA';
export const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);

export function time(text) {
  if (!text) return '';
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleString();
}

/** A protobuf JSON Duration ("95.5s") as "1 min 36 s". */
export function duration(text) {
  if (!text) return '';
  let seconds = Math.round(parseFloat(text));
  if (!Number.isFinite(seconds)) return text;
  const hours = Math.floor(seconds / 3600);
  seconds -= hours * 3600;
  const minutes = Math.floor(seconds / 60);
  seconds -= minutes * 60;
  return [hours && `${hours} h`, minutes && `${minutes} min`, `${seconds} s`].filter(Boolean).join(' ');
}

export function bytes(value) {
  let n = Number(value || 0);
  for (const unit of ['B', 'KiB', 'MiB', 'GiB']) {
    if (n < 1024 || unit === 'GiB') return `${n.toFixed(unit === 'B' ? 0 : 1)} ${unit}`;
    n /= 1024;
  }
  return `${n}`;
}

export function number(value, digits = 4) {
  const n = Number(value);
  if (!Number.isFinite(n)) return value === undefined || value === null ? '' : String(value);
  return Math.abs(n) >= 1000 ? n.toFixed(0) : Number(n.toPrecision(digits)).toString();
}

const statusLine = () => document.getElementById('status');

/** A short message for everyone, screen readers included (aria-live). */
export function announce(text) {
  statusLine().textContent = text;
}

/** A table with a header row; `rows` are arrays of cells (nodes or text). */
export function table(headers, rows, { caption, numeric = [] } = {}) {
  return h(
    'table',
    {},
    caption && h('caption', { class: 'sr-only' }, caption),
    h('thead', {}, h('tr', {}, headers.map((title, i) => h('th', { scope: 'col', class: numeric.includes(i) ? 'num' : null }, title)))),
    h('tbody', {}, rows.map((cells) => cells instanceof Node ? cells : h('tr', {}, cells.map((cell, i) => h('td', { class: numeric.includes(i) ? 'num' : null }, cell))))),
  );
}

export function progressBar(percent, label) {
  const value = Math.max(0, Math.min(100, Number(percent) || 0));
  return h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': value.toFixed(0), 'aria-label': label },
    h('span', { style: `width:${value}%` }));
}
