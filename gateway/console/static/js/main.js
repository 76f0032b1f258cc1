// The console's shell: who is signed in, the navigation, one view at a time
// (hash routes, so a reload keeps the page), sign out.

import { api, useSession } from './api.js';
import { announce } from './util.js';
import * as jobs from './jobs.js';
import * as job from './job.js';
import * as datasets from './datasets.js';
import * as newJob from './newjob.js';
import * as playground from './playground.js';

const ROUTES = [
  [/^#\/jobs\/([\w-]+)$/, job, 'jobs'],
  [/^#\/jobs$/, jobs, 'jobs'],
  [/^#\/new$/, newJob, 'new'],
  [/^#\/datasets$/, datasets, 'datasets'],
  [/^#\/playground$/, playground, 'playground'],
];

let session = null;
let leave = () => {};

function signedOut() {
  session = null;
  leave();
  document.getElementById('view').replaceChildren();
  document.getElementById('nav').hidden = true;
  document.getElementById('who').hidden = true;
  const form = document.getElementById('sign-in');
  form.hidden = false;
  const reason = new URLSearchParams(location.search).get('signin');
  const error = document.getElementById('sign-in-error');
  if (reason) {
    error.textContent = reason === 'API_KEY_REQUIRED' ? 'Enter an API key.' : 'That API key was not accepted (unknown or revoked).';
    error.hidden = false;
  }
  document.getElementById('api-key').focus();
}

async function show() {
  if (!session) return;
  leave();
  const hash = location.hash && location.hash !== '#' ? location.hash : '#/jobs';
  const [, view, name, match] = ROUTES.map(([pattern, module, nav]) => [pattern, module, nav, hash.match(pattern)]).find((r) => r[3]) || [null, jobs, 'jobs', []];
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.view === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const container = document.getElementById('view');
  container.replaceChildren();
  announce('');
  leave = (await view.render(container, { session, params: match.slice(1) })) || (() => {});
  document.getElementById('main').focus({ preventScroll: true });
}

async function start() {
  try {
    session = await api('GET', '/console/api/session');
  } catch {
    signedOut();
    return;
  }
  useSession(session, signedOut);
  if (location.search) history.replaceState(null, '', `/${location.hash}`);
  document.getElementById('who-name').textContent = `${session.name} (${session.role})`;
  document.getElementById('nav').hidden = false;
  document.getElementById('who').hidden = false;
  document.getElementById('sign-in').hidden = true;
  window.addEventListener('hashchange', show);
  await show();
}

document.getElementById('sign-out').addEventListener('click', async () => {
  try {
    await api('DELETE', '/console/api/session');
  } finally {
    location.replace('/');
  }
});

start();
