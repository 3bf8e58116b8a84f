// Drives pairgate's admin page (/admin) in headless Chromium for tests/admin_page.rs. The Rust test does
// what devices do (real signed handshakes) and tells this driver, one line on stdin at a time, what the
// operator does next; the driver answers each with one JSON line on stdout: {"ok":true,...} or
// {"ok":false,"error":...}. Screenshots of every step go to <artifacts>/NN-step.png.
//
//   node drive.mjs <pairgate-url> <artifacts-dir>     (the gateway token on stdin's first line)
//
// Commands (space-separated words; the last word of `reject` and `conflict` is JSON):
//   signin-wrong NAME             sign in with a wrong token: the page must say so
//   signin NAME TOKEN             sign in
//   approve REQUEST_ID SCOPES     wait for the request to appear (no reload), keep only SCOPES (comma list),
//                                 approve with the keyboard alone
//   reject REQUEST_ID NAME_JSON   wait for it; its name must show as text, run nothing; reject (confirmed)
//   hold-events / release-events  block / unblock the event stream (so a card stays after another operator
//                                 decided it)
//   approve-conflict REQUEST_ID   click approve on a card decided meanwhile: the error must say who won
//   revoke DEVICE_ID              on the devices page: revoke its operator token (confirmed)
//   audit DEVICE_ID               the audit page, all, then filtered by the device: actions and actors
//   kill RUN_ID PARENT CHILD      the sessions page: CHILD shows under PARENT; kill its run (confirmed)
//   phone                         390 px wide: every page fits, axe-core finds no violation
//   quit
// Env: PAIRGATE_BROWSER_DIR (playwright-core and axe-core, installed by scripts/test), CHROMIUM.
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { browserRequire, launch } from '../browser/chromium.mjs';

const axeSource = fs.readFileSync(browserRequire.resolve('axe-core/axe.min.js'), 'utf8');

const [base0, artifacts] = process.argv.slice(2);
if (!base0 || !artifacts) {
  console.error('usage: node drive.mjs <pairgate-url> <artifacts-dir>');
  process.exit(2);
}
const base = base0.replace(/\/+$/, '');
fs.mkdirSync(artifacts, { recursive: true });
const TIMEOUT = 15000;

const { ctx, page, close } = await launch('pairgate-admin-page-', { width: 1024, height: 800 });
page.setDefaultTimeout(TIMEOUT);

const evidence = { console: [], dialogs: [], requests: [], loads: 0, cspViolations: [] };
page.on('console', m => evidence.console.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', e => evidence.console.push(`pageerror: ${e.message}`));
// A native dialog (alert from injected markup, say) must never open: the page uses <dialog> only.
page.on('dialog', d => { evidence.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
page.on('load', () => { evidence.loads += 1; });
page.on('request', r => { if (!r.url().startsWith(base)) evidence.requests.push(r.url()); });

let shots = 0;
async function shot(name) {
  shots += 1;
  const file = path.join(artifacts, `${String(shots).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

async function text(selector) {
  return (await page.locator(selector).textContent())?.trim() ?? '';
}

async function waitText(selector, pattern) {
  await page.waitForFunction(([s, p]) => new RegExp(p).test(document.querySelector(s)?.textContent ?? ''),
    [selector, pattern.source], { timeout: TIMEOUT });
  return text(selector);
}

async function openTab(name) {
  await page.click(`#tab-${name}`);
  await page.waitForSelector(`#${name}:not([hidden]):not([aria-busy])`);
}

// Confirms the page's own confirmation dialog.
async function confirmDialog() {
  await page.waitForSelector('#confirm[open]');
  const question = await text('#confirm-text');
  await page.click('#confirm-ok');
  await page.waitForSelector('#confirm:not([open])', { state: 'attached' });
  return question;
}

const commands = {
  async 'signin-wrong'(name) {
    await page.goto(`${base}/admin`);
    await page.fill('#operator', name);
    await page.fill('#token', 'not-the-gateway-token');
    await page.press('#token', 'Enter');
    const message = await waitText('#signin-error', /./);
    return { message, shot: await shot('wrong-token'), stored: await page.evaluate(() => sessionStorage.getItem('pairgate.token')) };
  },
  async signin(name, token) {
    await page.fill('#operator', name);
    await page.fill('#token', token);
    await page.press('#token', 'Enter');
    await page.waitForSelector('#console:not([hidden])');
    await waitText('#stream-state', /Live updates: on/);
    const loads = evidence.loads;
    return {
      who: await text('#who'), loads, shot: await shot('signed-in'),
      cookies: (await ctx.cookies()).length,
      url: page.url(),
    };
  },
  async approve(requestId, scopes) {
    const loadsBefore = evidence.loads;
    const card = page.locator(`li[data-request-id="${requestId}"]`);
    await card.waitFor();
    const asked = await card.locator('input[type=checkbox]').evaluateAll(boxes => boxes.map(b => b.value));
    const keep = new Set(scopes.split(','));
    await shot('request-appeared');
    // The keyboard alone: focus each box to change with Tab from the card's first control, Space toggles.
    for (const scope of asked) {
      if (keep.has(scope)) continue;
      await card.locator(`input[data-scope="${scope}"]`).focus();
      await page.keyboard.press('Space');
    }
    await card.locator('button[data-action=approve]').focus();
    await page.keyboard.press('Enter');
    const notice = await waitText('#notice', /Approved/);
    await page.waitForSelector(`li[data-request-id="${requestId}"]`, { state: 'detached' });
    return { asked, notice, reloaded: evidence.loads !== loadsBefore, shot: await shot('approved-narrower') };
  },
  async reject(requestId, nameJson) {
    const name = JSON.parse(nameJson);
    const card = page.locator(`li[data-request-id="${requestId}"]`);
    await card.waitFor();
    const shown = await card.locator('h3.name').textContent();
    const markupInList = await page.locator('#request-list img, #request-list script').count();
    const file = await shot('hostile-name-as-text');
    await card.locator('button[data-action=reject]').click();
    const question = await confirmDialog();
    const notice = await waitText('#notice', /Rejected/);
    await page.waitForSelector(`li[data-request-id="${requestId}"]`, { state: 'detached' });
    return { shownAsText: shown === name, shown, markupInList, question, notice, dialogs: evidence.dialogs, shot: file };
  },
  async 'hold-events'() {
    await page.route('**/api/v1/events', route => route.abort());
    // The open stream is cut too: reopen the page's stream so that it hits the route.
    await page.evaluate(() => startStream());
    await waitText('#stream-state', /reconnecting/);
    return {};
  },
  async 'release-events'() {
    await page.unroute('**/api/v1/events');
    await waitText('#stream-state', /Live updates: on/);
    return {};
  },
  async 'approve-conflict'(requestId) {
    await page.evaluate(() => loadRequests());
    const card = page.locator(`li[data-request-id="${requestId}"]`);
    await card.waitFor();
    // Another operator decides it now (the test does, over REST); this page has not heard.
    process.stdout.write(JSON.stringify({ ok: true, waiting: 'decide it elsewhere, then send go' }) + '\n');
    await nextLine();
    await card.locator('button[data-action=approve]').click();
    const error = await waitText('#error', /already/);
    return { error, shot: await shot('conflict-says-who-won') };
  },
  async revoke(deviceId) {
    await openTab('devices');
    const card = page.locator(`li[data-device-id="${deviceId}"]`);
    await card.waitFor();
    const before = await card.textContent();
    await card.locator('button[data-action=revoke-operator]').click();
    const question = await confirmDialog();
    const notice = await waitText('#notice', /Revoked/);
    return { connectedBefore: /connected/.test(before), question, notice, shot: await shot('revoked') };
  },
  async kill(runId, parent, child) {
    await openTab('sessions');
    const node = page.locator(`li[data-session-key="${child}"]`);
    await node.waitFor();
    const underParent = await page.locator(`li[data-session-key="${parent}"] li[data-session-key="${child}"]`).count();
    await node.locator('summary').first().click();
    const run = node.locator(`.run[data-run-id="${runId}"]`);
    await run.waitFor();
    const stateBefore = await run.locator('.badge').textContent();
    await shot('sessions-tree');
    await run.locator('button').click();
    const question = await confirmDialog();
    const notice = await waitText('#notice', /Killed/);
    await page.waitForFunction(id => document.querySelector(`.run[data-run-id="${id}"] .badge`)?.textContent === 'killed', runId);
    return { underParent, stateBefore, question, notice, shot: await shot('run-killed') };
  },
  async audit(deviceId) {
    await openTab('audit');
    await page.waitForSelector('#audit-list li');
    const rows = () => page.locator('#audit-list li').evaluateAll(items =>
      items.map(li => ({ action: li.dataset.action, actor: li.querySelector('.actor')?.textContent ?? '' })));
    const all = await rows();
    const allShot = await shot('audit');
    await page.fill('#audit-device', deviceId);
    await page.fill('#audit-action', 'pairing.');
    await page.press('#audit-action', 'Enter');
    await page.waitForFunction(() => [...document.querySelectorAll('#audit-list li')].every(li => li.dataset.action.startsWith('pairing.')));
    const filtered = await rows();
    await shot('audit-filtered');
    await page.fill('#audit-device', '');
    await page.fill('#audit-action', '');
    return { all, filtered, shot: allShot };
  },
  async 'setup-code'(access, wsUrl) {
    await openTab('setup');
    await page.selectOption('#setup-access', access);
    await page.fill('#setup-url', wsUrl);
    await page.click('#setup-mint');
    await page.waitForSelector('#setup-result:not([hidden])');
    const setupId = await page.evaluate(() => document.getElementById('setup-result').dataset.setupId);
    await page.waitForSelector(`li[data-setup-id="${setupId}"][data-state="unused"]`);
    return {
      setupId,
      qr: await page.locator('#setup-qr').getAttribute('src'),
      code: await page.inputValue('#setup-code'),
      shot: await shot('setup-code'),
    };
  },
  async 'setup-redeemed'(setupId) {
    // The page hears of the redemption on its event stream: no reload, no click.
    await page.waitForSelector(`li[data-setup-id="${setupId}"][data-state="redeemed"]`);
    const notice = await waitText('#notice', /paired with a setup code/);
    // The code, a spent credential now, is no longer shown.
    await page.waitForSelector('#setup-result', { state: 'hidden' });
    const codeShown = await page.inputValue('#setup-code');
    return { notice, codeShown, shot: await shot('setup-redeemed') };
  },
  async rename(deviceId, label) {
    await openTab('devices');
    const card = page.locator(`li[data-device-id="${deviceId}"]`);
    await card.waitFor();
    await card.locator('summary').click();
    await card.locator('input[name=label]').fill(label);
    await card.locator('button[data-action=rename]').click();
    const notice = await waitText('#notice', /is now named/);
    await page.waitForFunction(([id, name]) =>
      document.querySelector(`li[data-device-id="${id}"] h3.name`)?.textContent.includes(name), [deviceId, label]);
    return { notice, shot: await shot('renamed') };
  },
  async phone() {
    await page.setViewportSize({ width: 390, height: 844 });
    const pages = {};
    for (const tab of ['requests', 'devices', 'setup', 'sessions', 'audit', 'health']) {
      await openTab(tab);
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      await page.evaluate(axeSource);
      const result = await page.evaluate(async () => {
        const r = await window.axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] });
        return r.violations.map(v => ({ id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary) }));
      });
      pages[tab] = { width, violations: result, shot: await shot(`phone-${tab}`) };
    }
    // The sign-in form at 390 px too.
    await page.click('#sign-out');
    await page.waitForSelector('#signin:not([hidden])');
    await page.evaluate(axeSource);
    const signin = await page.evaluate(async () => (await window.axe.run(document, { runOnly: ['wcag2a', 'wcag2aa'] })).violations.map(v => v.id));
    pages.signin = { width: await page.evaluate(() => document.documentElement.scrollWidth), violations: signin, shot: await shot('phone-signin') };
    return { pages };
  },
  async quit() {
    return { evidence };
  },
};

const input = readline.createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
async function nextLine() {
  const { value, done } = await lines.next();
  return done ? 'quit' : value;
}

for (;;) {
  const line = (await nextLine()).trim();
  if (!line) continue;
  const [command, ...args] = line.split(' ');
  const rest = command === 'reject' ? [args[0], args.slice(1).join(' ')] : args;
  try {
    if (!commands[command]) throw new Error(`unknown command ${command}`);
    const result = await commands[command](...rest);
    process.stdout.write(JSON.stringify({ ok: true, ...result }) + '\n');
  } catch (error) {
    let file = null;
    try { file = await shot(`${command}-failed`); } catch {}
    process.stdout.write(JSON.stringify({ ok: false, command, error: String(error?.stack ?? error), evidence, shot: file }) + '\n');
  }
  if (command === 'quit') break;
}
input.close();
await close();
process.exit(0);
