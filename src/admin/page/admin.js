// pairgate admin page. No framework, no build step, nothing from another origin.
//
// Rules this file keeps:
// - Text from clients (display names, platforms, scopes, audit details) is only ever set with
//   `textContent` or attribute values: never parsed as markup (src/admin/page.rs checks that no
//   markup-parsing call is here).
// - The gateway token lives in sessionStorage (this tab only) and travels only as the bearer of pairgate's
//   own REST API; never in a cookie, never in a URL.
// - Every API error is shown in words (`explain`).
// - A button's accessible name starts with its visible text (what a voice-control user says).
'use strict';

const TOKEN_KEY = 'pairgate.token';
const OPERATOR_KEY = 'pairgate.operator';
const SECTIONS = ['requests', 'devices', 'setup', 'sessions', 'audit', 'health'];

const $ = id => document.getElementById(id);

// ---- small DOM helpers: text only --------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'text') node.textContent = String(value);
    else if (name === 'onclick') node.addEventListener('click', value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function facts(pairs) {
  const list = el('dl', { class: 'facts' });
  for (const [term, value] of pairs) {
    if (value === undefined || value === null || value === '') continue;
    list.append(el('dt', { text: term }), el('dd', {}, value));
  }
  return list;
}

function when(ms) {
  if (!ms) return 'never';
  return new Date(ms).toLocaleString();
}

function age(ms) {
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.round(hours / 24)} days ago`;
}

function shortId(id) {
  return id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id;
}

function say(message) {
  $('notice').textContent = message;
  $('error').textContent = '';
}

function fail(message) {
  $('error').textContent = message;
  $('notice').textContent = '';
}

// ---- the API -----------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
    this.details = body?.details ?? {};
  }
}

function credentials() {
  return { token: sessionStorage.getItem(TOKEN_KEY), operator: sessionStorage.getItem(OPERATOR_KEY) };
}

function headers(extra = {}) {
  const { token, operator } = credentials();
  return {
    authorization: `Bearer ${token}`,
    // Percent-encoded: a header carries ASCII only, a name may not be.
    'x-pairgate-operator': encodeURIComponent(operator ?? ''),
    ...extra,
  };
}

async function api(method, path, body) {
  const init = { method, headers: headers(), cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, { code: 'network', message: `pairgate did not answer (${error.message})` });
  }
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = { message: text }; }
  if (!response.ok) {
    if (response.status === 401) signOut('The gateway token was refused. Sign in again.');
    throw new ApiError(response.status, json);
  }
  return json;
}

// Every error in words: what happened and, where it helps, what to do.
function explain(error, doing) {
  if (!(error instanceof ApiError)) return `${doing} failed: ${error.message}`;
  const why = error.message;
  switch (error.status) {
    case 0: return `${doing} failed: ${why}. Is pairgate running?`;
    case 401: return `${doing} failed: the gateway token was refused (${why}).`;
    case 403: return `${doing} was refused: ${why}.`;
    case 404: return `${doing} failed: ${why}. It may have been removed meanwhile.`;
    case 409: return `${doing} failed: ${why}.`;
    case 410: return `${doing} failed: ${why}. Ask the device to connect again for a new request.`;
    case 422: return `${doing} failed: ${why}.`;
    case 429: {
      const wait = Math.ceil((error.details?.retryAfterMs ?? 0) / 1000);
      return `${doing} failed: too many failed sign-ins from here. Try again in ${wait} s.`;
    }
    case 503: return `${doing} failed: pairgate cannot reach its database right now (${why}). Try again shortly.`;
    default: return `${doing} failed (HTTP ${error.status}): ${why}.`;
  }
}

// ---- confirmation ------------------------------------------------------------------------------------------

function confirmAction(text, okLabel) {
  const dialog = $('confirm');
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  dialog.returnValue = 'cancel';
  return new Promise(resolve => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
    $('confirm-ok').focus();
  });
}

// Runs an action from a button: disables it meanwhile, says what happened, refreshes what it changed.
async function act(button, doing, action, done) {
  button.disabled = true;
  try {
    const result = await action();
    say(done(result));
    return result;
  } catch (error) {
    fail(await explainFully(error, doing));
    return null;
  } finally {
    button.disabled = false;
  }
}

// ---- sign-in -----------------------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const operator = $('operator').value.trim();
  const token = $('token').value.trim();
  const error = $('signin-error');
  if (!operator) { error.textContent = 'Enter your name: it is recorded with every decision you make.'; $('operator').focus(); return; }
  if (!token) { error.textContent = 'Enter the gateway token.'; $('token').focus(); return; }
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(OPERATOR_KEY, operator);
  try {
    await api('GET', '/api/v1/requests?status=pending&limit=1');
  } catch (failure) {
    sessionStorage.removeItem(TOKEN_KEY);
    error.textContent = failure.status === 401 ? 'Sign-in failed: that gateway token is wrong.' : explain(failure, 'Sign-in');
    $('token').select();
    return;
  }
  $('token').value = '';
  error.textContent = '';
  showConsole();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearSetupResult();
  stopStream();
  $('console').hidden = true;
  $('who').hidden = true;
  $('sign-out').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message ?? '';
  $('operator').value = sessionStorage.getItem(OPERATOR_KEY) ?? '';
  $('token').focus();
}

function showConsole() {
  $('signin').hidden = true;
  $('console').hidden = false;
  $('who').hidden = false;
  $('who').textContent = `Signed in as ${credentials().operator}`;
  $('sign-out').hidden = false;
  startStream();
  show(location.hash.slice(1));
}

// ---- sections ----------------------------------------------------------------------------------------------

function show(name) {
  if (!SECTIONS.includes(name)) name = 'requests';
  for (const section of SECTIONS) {
    $(section).hidden = section !== name;
    const tab = $(`tab-${section}`);
    if (section === name) tab.setAttribute('aria-current', 'page'); else tab.removeAttribute('aria-current');
  }
  // aria-busy while the section loads: assistive technology (and the browser test) knows when it is done.
  const section = $(name);
  section.setAttribute('aria-busy', 'true');
  const load = { requests: loadRequests, devices: loadDevices, setup: loadSetupCodes, sessions: loadSessions, audit: loadAudit, health: loadHealth }[name];
  load().finally(() => section.removeAttribute('aria-busy'));
}

// ---- pending requests --------------------------------------------------------------------------------------

let pending = [];

async function loadRequests() {
  try {
    const page = await api('GET', '/api/v1/requests?status=pending&limit=200');
    pending = page.items;
  } catch (error) {
    fail(explain(error, 'Loading the pending requests'));
    return;
  }
  renderRequests();
}

function renderRequests() {
  const list = $('request-list');
  list.replaceChildren(...pending.map(requestCard));
  $('requests-empty').hidden = pending.length > 0;
  $('pending-count').textContent = pending.length ? `(${pending.length})` : '';
}

function requestCard(request) {
  const id = request.requestId;
  const name = request.displayName || 'Unnamed device';
  const scopes = el('fieldset', {}, el('legend', { text: 'Scopes to grant' }),
    ...request.scopes.map(scope => el('label', {},
      el('input', { type: 'checkbox', value: scope, checked: true, 'data-scope': scope }), scope)));
  if (!request.scopes.length) scopes.append(el('p', { class: 'hint', text: 'No scope asked.' }));
  const approve = el('button', { type: 'button', 'data-action': 'approve', 'aria-label': `Approve ${name}` }, 'Approve');
  const reject = el('button', { type: 'button', class: 'danger', 'data-action': 'reject', 'aria-label': `Reject ${name}` }, 'Reject');
  approve.addEventListener('click', () => {
    const chosen = [...scopes.querySelectorAll('input:checked')].map(box => box.value);
    const narrower = chosen.length < request.scopes.length;
    act(approve, `Approving ${name}`, () => api('POST', `/api/v1/requests/${encodeURIComponent(id)}/approve`,
      narrower ? { scopes: chosen } : undefined),
      () => `Approved ${name}${narrower ? ` with ${chosen.join(', ') || 'no scopes'}` : ''}.`).then(loadRequests);
  });
  reject.addEventListener('click', async () => {
    if (!(await confirmAction(`Reject the pairing request of ${name}?`, 'Reject'))) return;
    act(reject, `Rejecting ${name}`, () => api('POST', `/api/v1/requests/${encodeURIComponent(id)}/reject`),
      () => `Rejected ${name}.`).then(loadRequests);
  });
  return el('li', { class: 'card', 'data-request-id': id, 'data-device-id': request.deviceId },
    el('h3', { class: 'name', text: name }),
    facts([
      ['Device', el('span', { class: 'mono', title: request.deviceId, text: shortId(request.deviceId) })],
      ['Kind', [request.platform, request.deviceFamily, request.clientId].filter(Boolean).join(' · ')],
      ['From', request.remoteIp ?? 'this machine'],
      ['Role', request.roles.join(', ')],
      ['Reason', request.reason.replace(/-/g, ' ')],
      ['Asked', el('span', { 'data-age': request.ts, text: age(request.ts) })],
      ['Expires', when(request.expiresAtMs)],
    ]),
    scopes,
    el('div', { class: 'actions' }, approve, reject));
}

// A 409 says the request was decided already: say by whom, from the audit trail.
async function explainFully(error, doing) {
  const text = explain(error, doing);
  const requestId = error.details?.requestId ?? /pairing request (\S+) is already/.exec(error.message)?.[1];
  if (error.status !== 409 || !requestId) return text;
  const request = pending.find(r => r.requestId === requestId);
  if (!request) return text;
  try {
    const page = await api('GET', `/api/v1/audit?device=${encodeURIComponent(request.deviceId)}&action=pairing.&limit=50`);
    const decision = page.items.find(row => row.details?.requestId === requestId && row.action !== 'pairing.request');
    if (decision) {
      return `${text} ${decision.action === 'pairing.approve' ? 'Approved' : 'Decided'} by ${decision.actor} at ${when(decision.atMs)}.`;
    }
  } catch { /* the plain words stand */ }
  return text;
}

// ---- devices -----------------------------------------------------------------------------------------------

let deviceCursor = null;

async function loadDevices(more = false) {
  let page;
  try {
    const cursor = more && deviceCursor ? `&cursor=${encodeURIComponent(deviceCursor)}` : '';
    page = await api('GET', `/api/v1/devices?limit=100${cursor}`);
  } catch (error) {
    fail(explain(error, 'Loading the devices'));
    return;
  }
  const list = $('device-list');
  const cards = page.items.map(deviceCard);
  if (more) list.append(...cards); else list.replaceChildren(...cards);
  deviceCursor = page.nextCursor ?? null;
  $('devices-more').hidden = !deviceCursor;
  $('devices-empty').hidden = list.children.length > 0;
}

function tokenState(token) {
  if (token.revokedAtMs) return `revoked ${when(token.revokedAtMs)}`;
  if (token.rotatedAtMs) return `rotated ${when(token.rotatedAtMs)}`;
  return `active since ${when(token.createdAtMs)}${token.lastUsedAtMs ? `, last used ${age(token.lastUsedAtMs)}` : ''}`;
}

function deviceCard(device) {
  const id = device.deviceId;
  const name = device.operatorLabel || device.displayName || 'Unnamed device';
  const path = `/api/v1/devices/${encodeURIComponent(id)}`;
  const buttons = [];
  for (const token of device.tokens) {
    if (token.revokedAtMs || token.rotatedAtMs) continue;
    const rotate = el('button', { type: 'button', class: 'quiet', 'data-action': `rotate-${token.role}`, 'aria-label': `Rotate ${token.role} token of ${name}` }, `Rotate ${token.role} token`);
    const revoke = el('button', { type: 'button', class: 'danger', 'data-action': `revoke-${token.role}`, 'aria-label': `Revoke ${token.role} token of ${name}` }, `Revoke ${token.role} token`);
    rotate.addEventListener('click', async () => {
      if (!(await confirmAction(`Rotate the ${token.role} token of ${name}? Its live sockets close; it gets a new token on its next connect.`, 'Rotate'))) return;
      act(rotate, `Rotating the token of ${name}`, () => api('POST', `${path}/tokens/${token.role}/rotate`),
        () => `Rotated the ${token.role} token of ${name}.`).then(() => loadDevices());
    });
    revoke.addEventListener('click', async () => {
      if (!(await confirmAction(`Revoke the ${token.role} token of ${name}? Its live sockets close now.`, 'Revoke'))) return;
      act(revoke, `Revoking the token of ${name}`, () => api('POST', `${path}/tokens/${token.role}/revoke`),
        () => `Revoked the ${token.role} token of ${name}; its live sockets are closed.`).then(() => loadDevices());
    });
    buttons.push(rotate, revoke);
  }
  const remove = el('button', { type: 'button', class: 'danger', 'data-action': 'remove', 'aria-label': `Remove device ${name}` }, 'Remove device');
  remove.addEventListener('click', async () => {
    if (!(await confirmAction(`Remove ${name}? Its grants go, its tokens are revoked, its sockets close. It must pair again.`, 'Remove'))) return;
    act(remove, `Removing ${name}`, () => api('DELETE', path), () => `Removed ${name}.`).then(() => loadDevices());
  });
  buttons.push(remove);
  const labelInput = el('input', { name: 'label', maxlength: 64, value: device.operatorLabel ?? '', 'aria-label': `New name for ${name}`, autocomplete: 'off' });
  const save = el('button', { type: 'submit', 'data-action': 'rename' }, 'Save name');
  const renameForm = el('form', {}, labelInput, save);
  renameForm.addEventListener('submit', event => {
    event.preventDefault();
    act(save, `Renaming ${name}`, () => api('PUT', `${path}/label`, { label: labelInput.value }),
      result => `${name} is now named ${result.label}.`).then(result => { if (result) loadDevices(); });
  });
  const rename = el('details', { class: 'rename' }, el('summary', { text: 'Rename' }), renameForm);
  return el('li', { class: 'card', 'data-device-id': id },
    el('h3', { class: 'name' }, name, ' ',
      el('span', { class: device.connected ? 'badge live' : 'badge', text: device.connected ? 'connected' : 'offline' })),
    facts([
      ['Device', el('span', { class: 'mono', title: id, text: shortId(id) })],
      ['Calls itself', device.operatorLabel && device.displayName ? device.displayName : null],
      ['Kind', [device.platform, device.deviceFamily, device.clientId].filter(Boolean).join(' · ')],
      ['Roles', device.roles.join(', ') || 'none'],
      ['Scopes', device.approvedScopes.join(', ') || 'none'],
      ...device.tokens.map(token => [`${token.role} token`, `${tokenState(token)} (${token.scopes.join(', ') || 'no scopes'})`]),
      ['Last seen', device.lastSeenAtMs ? `${age(device.lastSeenAtMs)} (${when(device.lastSeenAtMs)})` : 'never'],
      ['From', device.remoteIp ?? 'this machine'],
      ['Approved', device.approvedAtMs ? `${when(device.approvedAtMs)}${device.approvedVia ? ` (${device.approvedVia})` : ''}` : null],
    ]),
    rename,
    el('div', { class: 'actions' }, buttons));
}

// ---- setup codes -------------------------------------------------------------------------------------------

async function mintSetupCode(event) {
  event.preventDefault();
  const body = { access: $('setup-access').value, join: $('setup-join').checked };
  const url = $('setup-url').value.trim();
  if (url) body.url = url;
  const minted = await act($('setup-mint'), 'Making a setup code', () => api('POST', '/api/v1/setup-codes', body),
    code => `Setup code made: ${code.access} access, until ${when(code.expiresAtMs)}.`);
  if (!minted) return;
  $('setup-qr').src = minted.qrDataUrl;
  $('setup-code').value = minted.setupCode;
  $('setup-facts').replaceChildren(...facts([
    ['Id', el('span', { class: 'mono', text: minted.setupId })],
    ['Access', minted.access + (minted.accessDowngraded ? ' (full access needs wss:// or loopback)' : '')],
    ['Address', minted.gatewayUrl],
    ['Expires', when(minted.expiresAtMs)],
    ['Join URL', minted.joinUrl ? el('span', { class: 'mono', text: minted.joinUrl }) : null],
  ]).children);
  $('setup-result').hidden = false;
  $('setup-result').dataset.setupId = minted.setupId;
  loadSetupCodes();
}

// A code is shown until it is used or the operator signs out: it is a credential.
function clearSetupResult() {
  $('setup-result').hidden = true;
  delete $('setup-result').dataset.setupId;
  $('setup-qr').removeAttribute('src');
  $('setup-code').value = '';
  $('setup-facts').replaceChildren();
}

async function loadSetupCodes() {
  let page;
  try {
    page = await api('GET', '/api/v1/setup-codes?limit=50');
  } catch (error) {
    fail(explain(error, 'Loading the setup codes'));
    return;
  }
  $('setup-list').replaceChildren(...page.items.map(setupCard));
  $('setup-empty').hidden = page.items.length > 0;
}

function setupCard(code) {
  const buttons = [];
  if (code.state === 'unused') {
    const revoke = el('button', { type: 'button', class: 'danger', 'data-action': 'revoke-setup', 'aria-label': `Revoke setup code ${code.setupId}` }, 'Revoke');
    revoke.addEventListener('click', async () => {
      if (!(await confirmAction('Revoke this setup code? No device can redeem it after.', 'Revoke'))) return;
      act(revoke, 'Revoking the setup code', () => api('POST', `/api/v1/setup-codes/${encodeURIComponent(code.setupId)}/revoke`),
        () => 'Revoked the setup code.').then(loadSetupCodes);
    });
    buttons.push(revoke);
  }
  return el('li', { class: 'card', 'data-setup-id': code.setupId, 'data-state': code.state },
    el('h3', {}, `${code.access} access `, el('span', { class: code.state === 'redeemed' ? 'badge live' : 'badge', text: code.state })),
    facts([
      ['Id', el('span', { class: 'mono', text: code.setupId })],
      ['Address', code.gatewayUrl],
      ['Made', `${when(code.issuedAtMs)} by ${code.issuedBy}`],
      ['Expires', when(code.expiresAtMs)],
      ['Join URL', code.join ? (code.joinFetchedAtMs ? `fetched ${when(code.joinFetchedAtMs)}` : 'not fetched') : null],
      ['Paired', code.deviceId ? el('span', { class: 'mono', title: code.deviceId, text: `${shortId(code.deviceId)} at ${when(code.redeemedAtMs)}` }) : null],
      ['Revoked', code.revokedAtMs ? `${when(code.revokedAtMs)} by ${code.revokedBy}` : null],
    ]),
    buttons.length ? el('div', { class: 'actions' }, buttons) : null);
}

// ---- sessions ----------------------------------------------------------------------------------------------

async function loadSessions() {
  let entries;
  try {
    entries = (await api('GET', '/api/v1/sessions?limit=200')).items;
  } catch (error) {
    fail(explain(error, 'Loading the sessions'));
    return;
  }
  const children = new Map();
  const keys = new Set(entries.map(e => e.key));
  for (const entry of entries) {
    const parent = entry.spawnedBy && keys.has(entry.spawnedBy) ? entry.spawnedBy : '';
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(entry);
  }
  const branch = (parent, depth) => (children.get(parent) ?? []).map(entry => sessionNode(entry, children, depth));
  $('session-tree').replaceChildren(...branch('', 0));
  $('sessions-empty').hidden = entries.length > 0;
}

function sessionNode(entry, children, depth) {
  const runs = el('div', { class: 'runs' });
  const details = el('details', {}, el('summary', {}, el('span', { class: 'mono', text: entry.key }),
    entry.label ? ` — ${entry.label}` : '', entry.subagentRole ? ` (${entry.subagentRole})` : ''), runs);
  details.addEventListener('toggle', () => { if (details.open) loadRuns(entry.key, runs); });
  const node = el('li', { 'data-session-key': entry.key }, details);
  const below = (children.get(entry.key) ?? []).map(child => sessionNode(child, children, depth + 1));
  if (below.length && depth < 32) node.append(el('ul', { 'aria-label': `Spawned by ${entry.key}` }, below));
  return node;
}

async function loadRuns(key, into) {
  let detail;
  try {
    detail = await api('GET', `/api/v1/sessions/${encodeURIComponent(key)}`);
  } catch (error) {
    into.replaceChildren(el('p', { class: 'error', text: explain(error, 'Loading the runs') }));
    return;
  }
  if (!detail.runs.length) { into.replaceChildren(el('p', { class: 'hint', text: 'No run.' })); return; }
  into.replaceChildren(...detail.runs.map(run => {
    const line = el('div', { class: 'run', 'data-run-id': run.runId },
      el('span', { class: `badge ${run.state === 'running' ? 'live' : ''}`, text: run.state }),
      el('span', { text: run.label || run.task }),
      el('span', { class: 'hint', text: run.endedAt ? `ended ${when(run.endedAt)}` : `since ${when(run.startedAt ?? run.createdAt)}` }));
    if (run.state === 'pending' || run.state === 'running') {
      const kill = el('button', { type: 'button', class: 'danger', 'aria-label': `Kill run ${run.runId}` }, 'Kill');
      kill.addEventListener('click', async () => {
        if (!(await confirmAction(`Kill run ${run.runId} and every active run below it?`, 'Kill'))) return;
        act(kill, 'Killing the run', () => api('POST', `/api/v1/runs/${encodeURIComponent(run.runId)}/kill`),
          result => `Killed ${result?.killed?.length ?? 1} run(s).`).then(() => loadRuns(key, into));
      });
      line.append(kill);
    }
    return line;
  }));
}

// ---- audit -------------------------------------------------------------------------------------------------

let auditCursor = null;

async function loadAudit(more = false) {
  const params = new URLSearchParams({ limit: '50' });
  const device = $('audit-device').value.trim();
  const action = $('audit-action').value.trim();
  if (device) params.set('device', device);
  if (action) params.set('action', action);
  if (more && auditCursor) params.set('cursor', auditCursor);
  let page;
  try {
    page = await api('GET', `/api/v1/audit?${params}`);
  } catch (error) {
    fail(explain(error, 'Loading the audit trail'));
    return;
  }
  const rows = page.items.map(row => el('li', { 'data-action': row.action, 'data-event-id': row.eventId },
    el('div', {}, el('strong', { text: row.action }), ' by ', el('span', { class: 'actor', text: row.actor })),
    el('div', { class: 'when' }, when(row.atMs), row.remoteAddr ? ` from ${row.remoteAddr}` : '',
      row.subject ? ' · ' : '', row.subject ? el('span', { class: 'mono', text: row.subject }) : ''),
    Object.keys(row.details ?? {}).length ? el('pre', { text: JSON.stringify(row.details) }) : null));
  if (more) $('audit-list').append(...rows); else $('audit-list').replaceChildren(...rows);
  auditCursor = page.nextCursor ?? null;
  $('audit-more').hidden = !auditCursor;
  $('audit-empty').hidden = $('audit-list').children.length > 0;
}

// ---- health ------------------------------------------------------------------------------------------------

async function loadHealth() {
  let status, body;
  try {
    const response = await fetch('/readyz', { cache: 'no-store', credentials: 'omit' });
    status = response.status;
    body = await response.json();
  } catch (error) {
    $('health-list').replaceChildren(el('dt', { text: 'pairgate' }), el('dd', { text: `did not answer (${error.message})` }));
    return;
  }
  const pairs = [
    ['Ready', body.ok ? 'yes' : `no: ${body.reason ?? `HTTP ${status}`}`],
    ['Schema version', body.schemaVersion],
    ['Event stream', streamState],
  ];
  if (body.upstream) {
    pairs.push(['Gateway behind', body.upstream.reachable ? 'answering' : 'not answering'],
      ['Gateway checked', when(body.upstream.checkedAtMs)]);
  }
  $('health-list').replaceChildren(...facts(pairs).childNodes);
}

// ---- the event stream: pending requests appear without a reload ---------------------------------------------
//
// EventSource cannot send an Authorization header, so the stream is read with fetch(). Any pairing event
// reloads the pending list (and the devices, when shown). The stream is reopened after it ends.

let streamAbort = null;
let streamState = 'not connected';
let retryTimer = null;

function setStreamState(text) {
  streamState = text;
  $('stream-state').textContent = `Live updates: ${text}`;
}

function stopStream() {
  streamAbort?.abort();
  streamAbort = null;
  clearTimeout(retryTimer);
}

async function startStream(delayMs = 0) {
  stopStream();
  const abort = new AbortController();
  streamAbort = abort;
  if (delayMs) {
    await new Promise(resolve => { retryTimer = setTimeout(resolve, delayMs); });
    if (abort.signal.aborted) return;
  }
  let reason = 'ended';
  try {
    const response = await fetch('/api/v1/events', { headers: headers(), cache: 'no-store', credentials: 'omit', signal: abort.signal });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw new ApiError(response.status, body);
    }
    setStreamState('on');
    // Anything that happened while the stream was down is picked up now.
    loadRequests();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const name = /^event: ?(.*)$/m.exec(block)?.[1];
        let payload = null;
        try { payload = JSON.parse(/^data: ?(.*)$/m.exec(block)?.[1] ?? 'null'); } catch { /* a name alone will do */ }
        if (name) onEvent(name, payload);
      }
    }
  } catch (error) {
    if (abort.signal.aborted) return;
    reason = explain(error, 'The event stream');
    if (error.status === 401) {
      // The gateway token changed under this tab: say so now, not at the next click.
      signOut('Signed out: the gateway token is no longer valid. Sign in with the new one.');
      return;
    }
  }
  if (abort.signal.aborted) return;
  setStreamState(`reconnecting (${reason})`);
  startStream(3000);
}

function onEvent(name, payload) {
  if (name.startsWith('device.pair.')) {
    loadRequests();
    if (!$('devices').hidden) loadDevices();
  }
  if (name === 'device.pair.setup.completed') {
    if (payload?.setupId && payload.setupId === $('setup-result').dataset.setupId) clearSetupResult();
    if (!$('setup').hidden) loadSetupCodes();
    const who = payload?.deviceName || (payload?.deviceId ? shortId(payload.deviceId) : 'A device');
    say(`${who} paired with a setup code (${payload?.access ?? 'some'} access).`);
  }
}

// ---- start -------------------------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('signin-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', () => signOut('Signed out.'));
  $('audit-filter').addEventListener('submit', event => { event.preventDefault(); loadAudit(); });
  $('audit-more').addEventListener('click', () => loadAudit(true));
  $('devices-more').addEventListener('click', () => loadDevices(true));
  $('health-refresh').addEventListener('click', loadHealth);
  $('setup-form').addEventListener('submit', mintSetupCode);
  window.addEventListener('hashchange', () => { if (!$('console').hidden) show(location.hash.slice(1)); });
  // Ages stay current.
  setInterval(() => {
    for (const node of document.querySelectorAll('[data-age]')) node.textContent = age(Number(node.dataset.age));
  }, 10000);
  const { token, operator } = credentials();
  $('operator').value = operator ?? '';
  if (token && operator) showConsole(); else $(operator ? 'token' : 'operator').focus();
});
