// The chat page with a real config (no sandbox): `wxbridge dev --config FILE` against a stand-in
// for WeCom's API on this machine. Nobody can type as a WeChat user; a real signed callback
// (from `wxbridge simulate`) and the bot's answer show as a read-only conversation, and the
// trace of the message lists the queue, the bot call and the send.
//
//   WXBRIDGE_BIN=target/debug/wxbridge node --test tests/browser/real.test.mjs   (scripts/browser-test)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from './chromium.mjs';

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const BIN = resolve(ROOT, process.env.WXBRIDGE_BIN || 'target/debug/wxbridge');
const WAIT = 20_000;

let tmp;
let wecom; // the stand-in WeCom API
let sends = []; // message/send bodies it took
let dev; // { child, url, log }
let browser;

/** WeCom's gettoken and message/send, as far as this test needs them. */
function startWecom() {
  return new Promise((done) => {
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        const path = req.url.split('?')[0];
        if (path === '/cgi-bin/gettoken') {
          res.end(JSON.stringify({ errcode: 0, errmsg: 'ok', access_token: 'REAL-LIKE-TOKEN', expires_in: 7200 }));
        } else if (path === '/cgi-bin/message/send') {
          sends.push(JSON.parse(body));
          res.end(JSON.stringify({ errcode: 0, errmsg: 'ok', msgid: 'm' + sends.length }));
        } else {
          res.statusCode = 404;
          res.end(JSON.stringify({ errcode: 404, errmsg: 'not here' }));
        }
      });
    });
    server.listen(0, '127.0.0.1', () => done(server));
  });
}

function startDev(config, apiBase) {
  return new Promise((done, fail) => {
    const env = { ...process.env, NO_COLOR: '1', WXBRIDGE_WECOM_API_BASE: apiBase };
    delete env.WXBRIDGE_CONFIG;
    const child = spawn(BIN, ['dev', '--listen', '127.0.0.1:0', '--config', config], { env });
    let log = '';
    const timer = setTimeout(() => fail(new Error(`wxbridge dev did not start:\n${log}`)), WAIT);
    child.stdout.on('data', (chunk) => {
      log += chunk;
      const found = /wxbridge dev listening on (http:\/\/\S+)/.exec(log);
      if (found && !dev) {
        clearTimeout(timer);
        dev = { child, url: found[1], log: () => log };
        done();
      }
    });
    child.stderr.on('data', (chunk) => (log += chunk));
    child.on('exit', (code) => fail(new Error(`wxbridge dev exited (${code}):\n${log}`)));
  });
}

function simulate(config, text) {
  return new Promise((done, fail) => {
    execFile(BIN, ['simulate', 'wecom', '--config', config, '--url', dev.url, '--text', text, '--json'], (err, stdout, stderr) =>
      err ? fail(new Error(`simulate failed: ${stderr}${stdout}`)) : done(JSON.parse(stdout.trim().split('\n').pop())),
    );
  });
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'wxbridge-real-'));
  const demo = JSON.parse(readFileSync(join(ROOT, 'examples/dev-config.json'), 'utf8'));
  // One real-looking WeCom app; nothing else (no sandbox credentials to lean on).
  const config = join(tmp, 'config.json');
  writeFileSync(config, JSON.stringify({ wecom: demo.wecom, bot: { kind: 'echo' } }));
  wecom = await startWecom();
  await startDev(config, `http://127.0.0.1:${wecom.address().port}`);
  dev.config = config;
  browser = await launch();
});

after(async () => {
  await browser?.close();
  dev?.child.kill('SIGINT');
  wecom?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('with a real config the page is read-only and shows real traffic with its trace', async () => {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(dev.url + '/');
  await page.waitForSelector('[data-testid="live"][data-state="live"]', { timeout: WAIT });
  assert.equal(await page.locator('[data-testid="chat"]').count(), 0, 'no sandbox users to write as');

  const text = `真的 callback ${Math.random().toString(36).slice(2, 8)}`;
  const result = await simulate(dev.config, text);
  assert.equal(result.status, 200, JSON.stringify(result));
  const chat = page.locator('[data-testid="chat"][data-chat="wecom:demo:WangFang"]');
  await chat.waitFor({ timeout: WAIT });
  await chat.click();
  const user = page.locator(`[data-testid="message"][data-side="user"][data-msg="${result.id}"]`);
  const bot = page.locator(`[data-testid="message"][data-side="bot"][data-msg="${result.id}"]`);
  await user.waitFor({ timeout: WAIT });
  await bot.waitFor({ timeout: WAIT });
  assert.match(await user.innerText(), new RegExp(text));
  assert.match(await bot.innerText(), new RegExp(text));
  assert.equal(sends.length, 1, 'the echo reached the stand-in WeCom once');
  assert.equal(sends[0].text.content, text);
  assert.ok(await page.locator('[data-testid="composer"]').isDisabled(), 'nobody types as a real user');

  await bot.click();
  const trace = page.locator('[data-testid="trace"]');
  await trace.waitFor({ timeout: WAIT });
  for (const kind of ['queued', 'bot', 'send']) {
    await trace.locator(`[data-testid="hop"][data-kind="${kind}"]`).first().waitFor({ timeout: WAIT });
  }
  const traced = await trace.innerText();
  assert.ok(!traced.includes('REAL-LIKE-TOKEN') && !traced.includes('sandbox-only-demo-secret'), traced);
  assert.deepEqual(errors, []);
});
