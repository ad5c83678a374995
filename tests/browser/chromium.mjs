// Debian's Chromium, headless, as the browser tests launch it (CHROMIUM names another binary).
// Without the background-networking flags Chromium keeps calling Google's hosts, which a closed
// network refuses.
import { chromium } from 'playwright-core';

const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A headless Chromium for the tests. */
export function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ARGS });
}
