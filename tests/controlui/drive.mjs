// Drives the real OpenClaw Control UI in headless Chromium through pairgate (tests/frontdoor.rs):
// load with #token= -> NOT_PAIRED and a pairing request in pairgate -> approve over REST -> reload ->
// connected -> a plain reload reconnects on its own.
//
//   node drive.mjs <pairgate-url> <pairgate-token> <screenshot.png>
//
// Writes <screenshot> (connected) and <screenshot without .png>.pairing.png (the pairing card); on failure
// <...>.fail.png and the evidence (connect results, HTTP errors, console) on stdout. Exit 0 on success.
// Env: PAIRGATE_BROWSER_DIR (where playwright-core is installed, by scripts/test), CHROMIUM
// (default /usr/bin/chromium).
import http from 'node:http';
import { launch } from '../browser/chromium.mjs';

const [base0, token, shot] = process.argv.slice(2);
if (!base0 || !token || !shot) {
  console.error('usage: node drive.mjs <pairgate-url> <pairgate-token> <screenshot.png>');
  process.exit(2);
}
const base = base0.replace(/\/+$/, '');
const TIMEOUT = 30000;
const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(2)}s]`, ...a);

// REST with node:http, not fetch(): fetch sends `Sec-Fetch-Mode: cors`, which pairgate rightly takes for a
// browser, and a browser gets no REST access without a device identity.
function rest(method, p) {
  return new Promise((resolve, reject) => {
    const headers = { authorization: `Bearer ${token}`, 'content-length': 0 };
    const req = http.request(base + p, { method, headers }, res => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', d => (body += d));
      res.on('end', () => {
        let json;
        try { json = JSON.parse(body); } catch { json = body; }
        resolve({ status: res.statusCode, json });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

const { page, close } = await launch('pairgate-control-ui-', { width: 1280, height: 800 });

const evidence = { console: [], httpErrors: [], connects: [] };
page.on('console', m => evidence.console.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', e => evidence.console.push(`pageerror: ${e.message}`));
page.on('response', r => { if (r.status() >= 400) evidence.httpErrors.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
// Each connect's answer as the UI received it, by phase.
let phase = 'first-load';
page.on('websocket', ws => {
  const connectIds = new Set();
  ws.on('framesent', f => {
    try { const m = JSON.parse(String(f.payload)); if (m.method === 'connect') connectIds.add(m.id); } catch {}
  });
  ws.on('framereceived', f => {
    let m;
    try { m = JSON.parse(String(f.payload)); } catch { return; }
    if (m.type === 'res' && connectIds.has(m.id)) {
      const outcome = { phase, ok: m.ok, code: m.error?.code, detail: m.error?.details?.code,
        requestId: m.error?.details?.requestId, scopes: m.payload?.auth?.scopes };
      evidence.connects.push(outcome);
      log('connect answered', JSON.stringify(outcome));
    }
  });
});

async function fail(why) {
  log('FAIL:', why);
  try { await page.screenshot({ path: shot.replace(/\.png$/, '') + '.fail.png' }); } catch {}
  console.log(JSON.stringify(evidence, null, 1));
  await close();
  process.exit(1);
}

async function waitFor(pred, what) {
  const end = Date.now() + TIMEOUT;
  while (Date.now() < end) {
    const value = await pred();
    if (value) return value;
    await page.waitForTimeout(200); // polling the page and pairgate's REST API
  }
  await fail(`timed out waiting for ${what}`);
}

// The login and pairing screens are <openclaw-login-gate>; connected, the shell renders
// <openclaw-router-outlet> in <main> and no `.shell-connection-status` banner (CSS locators pierce open
// shadow roots).
const pairingCard = page.getByText('Approve this browser', { exact: true });
async function connected() {
  const visible = async sel => (await page.locator(sel).count()) > 0 && (await page.locator(sel).first().isVisible());
  return !(await visible('openclaw-login-gate')) && (await page.locator('main openclaw-router-outlet').count()) > 0
    && !(await visible('.shell-connection-status'));
}
const connectAnswer = want => waitFor(() => evidence.connects.find(o => o.phase === want), `the connect answer (${want})`);

try {
  // 1. The token in the URL fragment, which the UI reads and strips; it connects to pairgate's WebSocket
  //    at the page's own origin.
  await page.goto(`${base}/#token=${encodeURIComponent(token)}`);
  // 2. NOT_PAIRED, the pairing card, and the request in pairgate.
  const refused = await connectAnswer('first-load');
  if (refused.ok || refused.code !== 'NOT_PAIRED' || !refused.requestId) await fail('the first connect was not NOT_PAIRED');
  await pairingCard.waitFor({ timeout: TIMEOUT });
  await page.screenshot({ path: shot.replace(/\.png$/, '') + '.pairing.png' });
  await waitFor(async () => {
    const listed = await rest('GET', '/api/v1/requests?status=pending');
    return (listed.json.items ?? []).some(item => item.requestId === refused.requestId);
  }, 'the pairing request in pairgate');
  // 3. An operator approves it over REST.
  const approved = await rest('POST', `/api/v1/requests/${refused.requestId}/approve`);
  if (approved.status !== 200) await fail(`the approval answered ${approved.status}: ${JSON.stringify(approved.json)}`);
  // 4. Reload. The UI keeps the token only after a successful connect, so the fragment goes back in.
  phase = 'reload';
  await page.evaluate(t => history.replaceState(null, '', '/#token=' + encodeURIComponent(t)), token);
  await page.reload();
  const answer = await connectAnswer('reload');
  if (!answer.ok) await fail(`the connect after approval was refused: ${answer.code}/${answer.detail}`);
  await waitFor(async () => !(await pairingCard.isVisible()) && (await connected()), 'the connected UI');
  await page.waitForTimeout(1500); // the shell settles before the screenshot
  await page.screenshot({ path: shot });
  // 5. A plain reload of the paired tab reconnects on its own.
  phase = 'plain-reload';
  await page.reload();
  const again = await connectAnswer('plain-reload');
  if (!again.ok) await fail(`a plain reload was refused: ${again.code}/${again.detail}`);
  await waitFor(connected, 'the connected UI after a plain reload');
  log('connected; screenshot', shot);
} catch (error) {
  await fail(error.stack ?? String(error));
}
await close();
process.exit(0);
