// The console's one door to the gateway: the public /v1 routes with the session
// cookie, the session's CSRF token on every state-changing request, errors as
// ApiError with their google.rpc details (field violations) decoded.

let csrfToken = '';
let onSignedOut = () => {};

export function useSession(session, signedOut) {
  csrfToken = session.csrf_token;
  onSignedOut = signedOut;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    const details = Array.isArray(this.body.details) ? this.body.details : [];
    this.reason = details.find((d) => d['@type']?.endsWith('google.rpc.ErrorInfo'))?.reason || '';
    this.violations = details
      .filter((d) => d['@type']?.endsWith('google.rpc.BadRequest'))
      .flatMap((d) => d.field_violations || []);
  }
}

function headers(method, json) {
  const result = { Accept: 'application/json' };
  if (!['GET', 'HEAD'].includes(method)) result['X-CSRF-Token'] = csrfToken;
  if (json) result['Content-Type'] = 'application/json';
  return result;
}

async function answer(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { message: text };
  }
  if (!response.ok) {
    const error = new ApiError(response.status, body);
    if (error.reason === 'SESSION_EXPIRED') onSignedOut();
    throw error;
  }
  return body;
}

export async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: headers(method, body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  return answer(response);
}

/** A server-streaming POST (NDJSON: `{"result": …}` per message, a last
 * `{"error": …}` on failure): `onMessage(result)` for each as it arrives. */
export async function streamPost(path, body, onMessage) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { ...headers('POST', true), Accept: 'application/x-ndjson' },
    body: JSON.stringify(body),
    credentials: 'same-origin',
  });
  if (!response.ok || !response.body) return answer(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    buffered += value || '';
    const lines = buffered.split('\n');
    buffered = done ? '' : lines.pop();
    for (const line of lines.filter((l) => l.trim())) {
      const message = JSON.parse(line);
      if (message.error) throw new ApiError(response.status, message.error);
      onMessage(message.result);
    }
    if (done) return;
  }
}

/** Uploads a file as the request body (fetch cannot report upload progress;
 * XMLHttpRequest can). Resolves with the dataset. */
export function upload(file, query, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open('POST', `/v1/datasets:upload?${new URLSearchParams(query)}`);
    for (const [name, value] of Object.entries(headers('POST', false))) request.setRequestHeader(name, value);
    request.setRequestHeader('Content-Type', 'application/octet-stream');
    request.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
    request.onerror = () => reject(new ApiError(0, { message: 'the upload failed: connection lost' }));
    request.onload = () => {
      const response = new Response(request.responseText || null, { status: request.status });
      answer(response).then((body) => resolve(body.dataset), reject);
    };
    request.send(file);
  });
}

/** Follows a job's events over SSE (the cookie authenticates EventSource).
 * `handlers[kind](payload, event)` per event kind; the browser reconnects by
 * itself with Last-Event-ID, and the server answers 204 after the last event. */
export function watch(jobId, handlers, onState = () => {}) {
  const source = new EventSource(`/v1/jobs/${encodeURIComponent(jobId)}/events`);
  for (const kind of ['state_change', 'training_metrics', 'evaluation_metrics', 'checkpoint_saved', 'log']) {
    source.addEventListener(kind, (message) => {
      const event = JSON.parse(message.data).event;
      handlers[kind]?.(event[kind], event);
    });
  }
  source.addEventListener('error', (message) => {
    if (message.data) handlers.error?.(JSON.parse(message.data));
    onState(source.readyState);
  });
  source.addEventListener('open', () => onState(source.readyState));
  return () => source.close();
}
