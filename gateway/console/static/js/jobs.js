// Jobs: a table with a state filter, refreshed every two seconds.

import { api } from './api.js';
import { h, method, number, progressBar, state, table, time } from './util.js';

const STATES = ['QUEUED', 'STARTING', 'RUNNING', 'CANCELLING', 'SUCCEEDED', 'FAILED', 'CANCELLED'];
const REFRESH_MS = 2000;

export async function render(container, { session }) {
  const filter = h('select', { id: 'state-filter', 'aria-label': 'Show jobs in state' },
    h('option', { value: '' }, 'All states'), STATES.map((s) => h('option', { value: s }, s.toLowerCase())));
  const body = h('div', { id: 'jobs-table' });
  const count = h('p', { class: 'muted', id: 'jobs-count' });
  container.append(
    h('div', { class: 'row' }, h('h1', {}, 'Jobs'),
      h('div', { style: 'flex:0 0 14rem' }, h('label', { for: 'state-filter' }, 'State'), filter),
      h('div', { style: 'flex:0 0 auto' }, h('a', { href: '#/new' }, 'New job'))),
    h('div', { class: 'card' }, count, body),
  );
  const admin = session.role === 'admin';
  let timer = 0;
  let stopped = false;

  async function refresh() {
    clearTimeout(timer);
    const query = new URLSearchParams({ page_size: '100' });
    if (filter.value) query.set('states', `JOB_STATE_${filter.value}`);
    try {
      const reply = await api('GET', `/v1/jobs?${query}`);
      const jobs = reply.jobs || [];
      count.textContent = `${reply.total_size ?? jobs.length} job(s)`;
      const headers = ['Job', 'State', 'Method', 'Model', 'Progress', 'Latest loss', 'Created', ...(admin ? ['Owner'] : [])];
      body.replaceChildren(table(headers, jobs.map((job) => h('tr', { dataset: { job: job.id } },
        h('td', {}, h('a', { href: `#/jobs/${job.id}` }, job.spec?.display_name || job.id)),
        h('td', {}, h('span', { class: `badge ${state(job)}` }, state(job).toLowerCase())),
        h('td', {}, method(job.spec).toLowerCase()),
        h('td', { title: job.spec?.model }, (job.spec?.model || '').split('/').pop()),
        h('td', {}, progressBar(job.progress?.percent, `${job.id} progress`), ` ${number(job.progress?.step || 0)} / ${number(job.progress?.total_steps || 0)}`),
        h('td', { class: 'num' }, job.latest_metrics?.step ? number(job.latest_metrics.loss) : ''),
        h('td', {}, time(job.create_time)),
        admin && h('td', {}, job.owner),
      )), { caption: 'Training jobs, newest first', numeric: [5] }));
    } catch (error) {
      body.replaceChildren(h('p', { class: 'error', role: 'alert' }, error.message));
    }
    if (!stopped) timer = setTimeout(refresh, document.hidden ? REFRESH_MS * 5 : REFRESH_MS);
  }
  filter.addEventListener('change', refresh);
  await refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
