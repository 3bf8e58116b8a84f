// Debian's Chromium, headless, for the browser tests' drivers (tests/controlui, tests/admin_page): one
// place for how it is started on this kind of machine.
//
// Env: PAIRGATE_BROWSER_DIR (where playwright-core is installed, by scripts/test), CHROMIUM (default
// /usr/bin/chromium).
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// Resolves packages installed beside playwright-core (axe-core, say).
export const browserRequire = createRequire(path.join(process.env.PAIRGATE_BROWSER_DIR ?? '.', 'package.json'));
const { chromium } = browserRequire('playwright-core');

// A fresh profile in a temp dir and Chromium on it; `close()` ends the browser and removes the profile.
export async function launch(profilePrefix, viewport) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), profilePrefix));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    viewport,
    // The machine has no internet: no background fetches, no sync, no component updates.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  const close = async () => {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { ctx, page, close };
}
