// The `wxbridge dev` chat page in a real browser (Debian's Chromium driven by playwright-core):
// every sandbox chat answered, the AI bot's stream, the Official Account's 5 s window, an image
// round trip, the trace of a message, keyboard use, phone width and Chinese text.
//
//   WXBRIDGE_DEV_URL=http://127.0.0.1:8787 node --test tests/browser/chat.test.mjs   (scripts/browser-test)
//
// WXBRIDGE_BROWSER_QUICK=1 runs only the WeCom app round trip and its trace; screenshots go to
// $WXBRIDGE_SCREENSHOTS (default target/screenshots/); CHROMIUM names the browser binary.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from './chromium.mjs';

const BASE = (process.env.WXBRIDGE_DEV_URL || '').replace(/\/+$/, '');
const QUICK = process.env.WXBRIDGE_BROWSER_QUICK === '1';
const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const SHOTS = resolve(ROOT, process.env.WXBRIDGE_SCREENSHOTS || 'target/screenshots');
const WAIT = 20_000; // the longest any single step may take
// The demo's credentials (examples/dev-config.json): none may show on the page or in the feed.
const SECRETS = [
  'sandbox-only-demo-secret',
  'sandbox-only-demo-app-secret',
  'sandbox-only-demo-bot-token',
  'wxbridgeDemoToken',
  'wxbridgeDemoOaToken',
  'wxbridgeDemoAibotToken',
  'nRDubK1SCq0IU7bkPJDwdgiZbNr0SLjxD0OT65I4uuY',
  'Kq3vL8Qm2Zr7Tn5Wx1Yb4Hc6Jd9Fg0Se3Ua8Vp2Ik7A',
  'DeployBotDemoKey0wxbridge0sandbox0only0ABc1',
];
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
// A 32×32 PNG (green and white squares).
const PNG_BASE64 =
  'iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAIAAAD8GO2jAAAAOElEQVR42mP4jwOwH0zAikhVzzBqwagFQ8ACahmES/2oBaMWDAULRouKUQtGLRitD0YtGLUAaAEA6/5KeUD/++UAAAAASUVORK5CYII=';

const sel = {
  live: '[data-testid="live"]',
  chat: (id) => `[data-testid="chat"][data-chat="${id}"]`,
  composer: '[data-testid="composer"]',
  send: '[data-testid="send"]',
  attach: '[data-testid="attach"]',
  message: (side, msg) =>
    `[data-testid="message"]${side ? `[data-side="${side}"]` : ''}${msg ? `[data-msg="${msg}"]` : ''}`,
  trace: '[data-testid="trace"]',
  hop: '[data-testid="hop"]',
};

let browser;
let desktop; // { context, page, problems }
let chats = [];
let tmp;
const answered = new Map(); // chat id -> { msg, text } of its answered round trip

// ---------------------------------------------------------------------------------------------
// Helpers

/** Polls `check` (async, returns a truthy value when done) until it holds or `timeout` passes. */
async function until(check, { timeout = WAIT, interval = 100, message }) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const why = typeof message === 'function' ? await message(last) : message;
      throw new Error(`${why} (waited ${(timeout / 1000).toFixed(0)} s)`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** A short random tag that makes each message's text unique. */
function tag() {
  return Math.random().toString(36).slice(2, 8);
}

/** The events so far (GET /events replays the history first, then stays open: read until idle). */
async function fetchEvents({ idleMs = 400, maxMs = 3000 } = {}) {
  const controller = new AbortController();
  const hardStop = setTimeout(() => controller.abort(), maxMs);
  const events = [];
  let buffer = '';
  try {
    const res = await fetch(`${BASE}/events`, { signal: controller.signal, headers: { accept: 'text/event-stream' } });
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      let idle;
      const chunk = await Promise.race([
        reader.read(),
        new Promise((r) => (idle = setTimeout(() => r({ idle: true }), idleMs))),
      ]);
      clearTimeout(idle);
      if (chunk.idle || chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split('\n')
          .filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).replace(/^ /, ''))
          .join('\n');
        if (data) {
          try {
            events.push(JSON.parse(data));
          } catch {
            events.push({ unparsed: data });
          }
        }
      }
    }
    controller.abort();
  } catch (err) {
    if (err.name !== 'AbortError') events.push({ fetch_error: String(err) });
  } finally {
    clearTimeout(hardStop);
  }
  return events;
}

/** The events replay as text (to look for secrets in everything the server tells the page). */
async function fetchEventsText() {
  return JSON.stringify(await fetchEvents());
}

/** Records console errors, page errors and failed requests of a page. */
function watch(page) {
  const problems = [];
  // A missing favicon is no fault of the page.
  const favicon = (url) => /\/favicon\.ico$/.test(url || '');
  page.on('console', (m) => {
    if ((m.type() === 'error' || m.type() === 'warning') && !favicon(m.location()?.url)) {
      const where = m.location()?.url ? ` (${m.location().url}:${m.location().lineNumber})` : '';
      problems.push(`console.${m.type()}: ${m.text()}${where}`);
    }
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('requestfailed', (r) => {
    // The event stream is cut when the page closes; that is no problem.
    if (!r.url().endsWith('/events')) problems.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && !favicon(r.url())) problems.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });
  return problems;
}

async function openPage(viewport, extra = {}) {
  const context = await browser.newContext({ viewport, locale: 'zh-CN', ...extra });
  const page = await context.newPage();
  const problems = watch(page);
  await page.addInitScript(recorder);
  page.setDefaultTimeout(WAIT);
  return { context, page, problems };
}

/**
 * Runs in the page before its own scripts: watches the DOM and keeps every state the bot bubbles
 * (streaming flag, text length) and the OA countdowns went through, however briefly.
 */
function recorder() {
  const rec = { bots: [], countdowns: [] };
  window.__wxbridgeRecord = rec;
  const lastBot = new Map();
  const lastCountdown = new Map();
  const scan = () => {
    const at = Date.now();
    for (const el of document.querySelectorAll('[data-testid="message"][data-side="bot"]')) {
      const msg = el.getAttribute('data-msg');
      const state = {
        msg,
        streaming: el.getAttribute('data-streaming'),
        via: el.getAttribute('data-via'),
        text: (el.textContent || '').trim().slice(0, 1000),
      };
      const key = JSON.stringify(state);
      const seen = lastBot.get(msg) || new Set();
      if (!seen.has(key)) {
        seen.add(key);
        lastBot.set(msg, seen);
        rec.bots.push({ ...state, at });
      }
    }
    for (const el of document.querySelectorAll('[data-testid="countdown"]')) {
      const msg = el.closest('[data-testid="message"]')?.getAttribute('data-msg') ?? null;
      const text = (el.textContent || '').trim();
      if (lastCountdown.get(msg) !== text) {
        lastCountdown.set(msg, text);
        rec.countdowns.push({ msg, text, at });
      }
    }
  };
  new MutationObserver(scan).observe(document, {
    subtree: true,
    childList: true,
    attributes: true,
    characterData: true,
  });
}

/** Diagnostics for a failure: the page's console errors and the last events. */
async function diagnose(where, chatId) {
  const lines = [];
  if (where?.problems?.length) {
    lines.push('page console errors / failed requests:', ...where.problems.slice(-20).map((p) => `  ${p}`));
  } else {
    lines.push('page console errors / failed requests: none');
  }
  try {
    const events = await fetchEvents();
    const mine = chatId ? events.filter((e) => e.chat === chatId || e.chat == null) : events;
    lines.push(`last events${chatId ? ` (chat ${chatId} and chat-less)` : ''}, ${events.length} in all:`);
    for (const e of mine.slice(-25)) lines.push(`  ${JSON.stringify(e).slice(0, 400)}`);
  } catch (err) {
    lines.push(`events: cannot read (${err})`);
  }
  if (where?.page && !where.page.isClosed()) {
    try {
      mkdirSync(SHOTS, { recursive: true });
      const file = join(SHOTS, `failure-${Date.now()}.png`);
      await where.page.screenshot({ path: file, fullPage: true });
      lines.push(`screenshot: ${file}`);
    } catch (err) {
      lines.push(`screenshot failed: ${err.message}`);
    }
  }
  return lines.join('\n');
}

/** Runs a test body; on failure adds the page's errors and the last events to the message. */
async function explained(where, chatId, body) {
  try {
    return await body();
  } catch (err) {
    const extra = await diagnose(where, chatId);
    err.message = `${err.message}\n\n${extra}`;
    throw err;
  }
}

async function selectChat(page, id) {
  const item = page.locator(sel.chat(id));
  await item.waitFor({ state: 'attached', timeout: WAIT }).catch(() => {
    throw new Error(`chat list item ${sel.chat(id)} not found`);
  });
  if (!(await item.isVisible())) await openChatList(page);
  await item.click();
  await until(async () => page.locator(sel.composer).isEditable(), {
    timeout: 5000,
    message: `after clicking ${sel.chat(id)}, the composer ${sel.composer} is not editable`,
  });
}

/** On a narrow screen the chat list may sit in a drawer: open it with its labelled button. */
async function openChatList(page) {
  const buttons = page.locator('button[aria-label], [role="button"][aria-label]').filter({ visible: true });
  const labels = await buttons.evaluateAll((els) => els.map((e) => e.getAttribute('aria-label')));
  const index = labels.findIndex((l) => /chat|conversation|menu|list|会话|聊天|菜单/i.test(l));
  if (index < 0) {
    throw new Error(
      `the chat list is hidden and no visible button labelled chats/menu/list opens it (labelled buttons: ${JSON.stringify(labels)})`,
    );
  }
  await buttons.nth(index).click();
}

const isSay = (r) => r.url().endsWith('/sandbox/say') && r.request().method() === 'POST';

/** Waits for the page's POST /sandbox/say while `act` runs; returns the inbound id. */
async function sayVia(page, act, what) {
  const response = page.waitForResponse(isSay, { timeout: 10_000 }).catch(() => null);
  await act();
  const res = await response;
  if (!res) throw new Error(`${what}: the page sent no POST /sandbox/say within 10 s`);
  const body = await res.text();
  if (res.status() !== 202) throw new Error(`${what}: POST /sandbox/say answered ${res.status()}: ${body}`);
  let msg;
  try {
    msg = JSON.parse(body).msg;
  } catch {
    /* reported below */
  }
  if (!msg) throw new Error(`${what}: POST /sandbox/say answered 202 without {"msg": …}: ${body}`);
  return msg;
}

/** Types `text` into the selected chat's composer and presses Enter; returns the inbound id. */
async function sendText(page, text) {
  const composer = page.locator(sel.composer);
  await composer.fill(text);
  return sayVia(page, () => composer.press('Enter'), `sending ${JSON.stringify(text)}`);
}

/** Waits for the bot's bubble of `msg` whose text includes `expected`. */
async function botBubble(page, msg, expected, what) {
  const bubble = page.locator(sel.message('bot'), { hasText: expected });
  try {
    await bubble.first().waitFor({ state: 'visible', timeout: WAIT });
  } catch {
    const seen = await page
      .locator(sel.message('bot', msg))
      .evaluateAll((els) => els.map((e) => e.textContent.trim().slice(0, 200)));
    throw new Error(
      `${what}: no visible bot bubble ${sel.message('bot')} containing ${JSON.stringify(expected)} within ${WAIT / 1000} s` +
        ` (bot bubbles of msg ${msg}: ${seen.length ? JSON.stringify(seen) : 'none'})`,
    );
  }
  const found = bubble.first();
  const bubbleMsg = await found.getAttribute('data-msg');
  assert.equal(bubbleMsg, msg, `${what}: the bot bubble with the echo carries data-msg=${bubbleMsg}, not the say's msg ${msg}`);
  return found;
}

/**
 * The hops listed in the open trace panel: kind, full text (the <details> JSON included) and the
 * event parsed from its <details> (null when that is no JSON).
 */
async function traceHops(page) {
  return page.locator(`${sel.trace} ${sel.hop}`).evaluateAll((els) =>
    els.map((e) => {
      const details = e.querySelector('details');
      let json = null;
      if (details) {
        const summary = details.querySelector('summary')?.textContent || '';
        const body = details.querySelector('pre')?.textContent ?? details.textContent.slice(summary.length);
        try {
          json = JSON.parse(body);
        } catch {
          json = null;
        }
      }
      return { kind: e.getAttribute('data-kind'), text: e.textContent || '', json };
    }),
  );
}

/** Opens the trace of a bubble by clicking it; waits for the panel and a first hop. */
async function openTrace(page, bubble) {
  await bubble.click();
  const trace = page.locator(sel.trace);
  await trace.waitFor({ state: 'visible', timeout: 5000 }).catch(() => {
    throw new Error(`clicking the bubble did not show the trace panel ${sel.trace}`);
  });
  await page
    .locator(`${sel.trace} ${sel.hop}`)
    .first()
    .waitFor({ state: 'attached', timeout: 5000 })
    .catch(() => {
      throw new Error(`the trace panel ${sel.trace} lists no hop ${sel.hop}`);
    });
  return trace;
}

async function closeTrace(page) {
  await page.keyboard.press('Escape');
  await page
    .locator(sel.trace)
    .waitFor({ state: 'hidden', timeout: 3000 })
    .catch(() => {
      throw new Error('Esc did not close the trace panel');
    });
}

/** Waits until the open trace lists hops of every kind in `groups` (each group: any of its kinds). */
async function traceHas(page, groups, what) {
  return until(
    async () => {
      const hops = await traceHops(page);
      const kinds = new Set(hops.map((h) => h.kind));
      return groups.every((g) => g.some((k) => kinds.has(k))) && hops;
    },
    {
      timeout: 10_000,
      message: async () => {
        const kinds = (await traceHops(page)).map((h) => h.kind);
        const missing = groups.filter((g) => !g.some((k) => kinds.includes(k))).map((g) => g.join('|'));
        return `${what}: the trace lists hops [${kinds.join(', ')}], missing ${missing.join(', ')}`;
      },
    },
  );
}

function assertNoSecrets(text, where) {
  for (const secret of SECRETS) {
    const at = text.indexOf(secret);
    assert.equal(at, -1, `${where} shows the secret ${JSON.stringify(secret)}: …${text.slice(Math.max(0, at - 120), at + 60)}…`);
  }
}

async function scrollWidth(page) {
  return page.evaluate(() => document.scrollingElement.scrollWidth);
}

async function screenshot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const file = join(SHOTS, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

const chat = (channel) => chats.find((c) => c.channel === channel && c.composer);
const composerChats = () => chats.filter((c) => c.composer);

/** The text a user types in `c`: unique, with Chinese; AI-bot groups need the @mention. */
function textFor(c, body) {
  return c.bot_name ? `@${c.bot_name} ${body}` : body;
}

// ---------------------------------------------------------------------------------------------
// Setup

before(async () => {
  assert.ok(BASE, 'WXBRIDGE_DEV_URL is not set: start `wxbridge dev` and point it there (scripts/browser-test does both)');
  const res = await fetch(`${BASE}/sandbox/chats`).catch((err) => {
    throw new Error(`GET ${BASE}/sandbox/chats failed: ${err.cause?.message || err.message}`);
  });
  const raw = await res.text();
  assert.equal(res.status, 200, `GET /sandbox/chats answered ${res.status}: ${raw}`);
  const body = JSON.parse(raw);
  assert.equal(body.sandbox, true, 'GET /sandbox/chats: "sandbox" is not true (the tests need the built-in demo config)');
  assert.ok(Array.isArray(body.chats) && body.chats.length, `GET /sandbox/chats lists no chats: ${JSON.stringify(body)}`);
  chats = body.chats;
  tmp = mkdtempSync(join(tmpdir(), 'wxbridge-browser-'));
  browser = await launch();
  desktop = await openPage(DESKTOP);
});

after(async () => {
  await browser?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Tests (in order: later ones use the conversations of earlier ones)

test('the page loads and its event stream goes live', { timeout: 30_000 }, async () => {
  await explained(desktop, null, async () => {
    const { page } = desktop;
    const res = await page.goto(`${BASE}/`);
    assert.equal(res.status(), 200, `GET / answered ${res.status()}`);
    await page
      .locator(`${sel.live}[data-state="live"]`)
      .waitFor({ state: 'attached', timeout: WAIT })
      .catch(async () => {
        const state = await page.locator(sel.live).getAttribute('data-state', { timeout: 1000 }).catch(() => 'no element');
        throw new Error(`${sel.live} never got data-state="live" (it is ${JSON.stringify(state)})`);
      });
    for (const c of chats) {
      await page
        .locator(sel.chat(c.id))
        .waitFor({ state: 'attached', timeout: 5000 })
        .catch(() => {
          throw new Error(`GET /sandbox/chats lists ${c.id} but the page has no ${sel.chat(c.id)}`);
        });
    }
  });
});

test('every chat with a composer gets the echo bot’s answer', { timeout: 180_000 }, async (t) => {
  const list = QUICK ? [chat('wecom')].filter(Boolean) : composerChats();
  assert.ok(list.length, 'no sandbox chat has a composer');
  for (const c of list) {
    await t.test(`${c.channel}: ${c.title}`, { timeout: 45_000 }, async () => {
      await explained(desktop, c.id, async () => {
        const { page } = desktop;
        await selectChat(page, c.id);
        if (c.bot_name) {
          const prefill = await page.locator(sel.composer).inputValue();
          assert.ok(
            prefill.includes(`@${c.bot_name}`),
            `AI-bot group ${c.id}: the composer is not prefilled with "@${c.bot_name} " (it holds ${JSON.stringify(prefill)})`,
          );
        }
        const body = `你好 ${c.channel} ${tag()}`;
        const msg = await sendText(page, textFor(c, body));
        // The user's own bubble, right away (from the "user" event).
        await page
          .locator(sel.message('user', msg), { hasText: body })
          .first()
          .waitFor({ state: 'visible', timeout: 10_000 })
          .catch(() => {
            throw new Error(`no user bubble ${sel.message('user', msg)} with ${JSON.stringify(body)}`);
          });
        const bubble = await botBubble(page, msg, body, c.id);
        const text = await bubble.textContent();
        assert.ok(text.includes('你好'), `${c.id}: the bot bubble lost the Chinese text: ${JSON.stringify(text)}`);
        const font = await bubble.evaluate((e) => getComputedStyle(e).fontFamily);
        assert.match(
          font,
          /Noto Sans CJK SC|WenQuanYi Micro Hei|PingFang SC|Microsoft YaHei/i,
          `${c.id}: the bubble's font-family has no CJK font: ${font}`,
        );
        answered.set(c.id, { msg, text: body });
      });
    });
  }
});

test('the AI bot’s answer streams into one bubble', { skip: QUICK && 'quick run', timeout: 60_000 }, async () => {
  const c = chat('wecom_aibot');
  assert.ok(c, 'GET /sandbox/chats has no wecom_aibot chat with a composer');
  await explained(desktop, c.id, async () => {
    const { page } = desktop;
    await selectChat(page, c.id);
    const body = `你好 流式 ${tag()}`;
    const msg = await sendText(page, textFor(c, body));
    const bubble = await botBubble(page, msg, body, c.id);
    // Finished: the streaming marker goes away.
    await until(async () => (await bubble.getAttribute('data-streaming')) !== 'true', {
      message: `${c.id}: the stream bubble of ${msg} still has data-streaming="true"`,
    });
    assert.equal(await bubble.getAttribute('data-via'), 'stream', `${c.id}: the answer's bubble is not data-via="stream"`);
    assert.equal(
      await page.locator(sel.message('bot', msg)).count(),
      1,
      `${c.id}: the stream shows as more than one bot bubble for msg ${msg} (it must update one bubble in place)`,
    );
    // What WeCom's refreshes got, from the trace; what the page showed, from the recorder.
    await openTrace(page, bubble);
    const hops = await traceHas(page, [['callback'], ['stream']], `${c.id} trace`);
    await closeTrace(page);
    const streams = hops.filter((h) => h.kind === 'stream');
    assert.ok(streams.length >= 1, `${c.id}: no "stream" hop in the trace of ${msg}`);
    assert.ok(
      streams.every((h) => h.json),
      `${c.id}: a "stream" hop's <details> holds no JSON: ${JSON.stringify(streams.map((h) => h.text.slice(0, 200)))}`,
    );
    // The partial snapshots WeCom's refreshes got before the last one.
    const partials = [
      ...new Set(streams.filter((h) => h.json.finished === false && h.json.text).map((h) => String(h.json.text).trim())),
    ];
    const states = await page.evaluate((m) => window.__wxbridgeRecord.bots.filter((b) => b.msg === m), msg);
    const streamed = states.filter((s) => s.streaming === 'true');
    console.log(
      `# ${c.id}: ${streams.length} stream hop(s), partial snapshots ${JSON.stringify(partials)}; ` +
        `the bubble showed ${JSON.stringify(streamed.map((s) => s.text))} while streaming`,
    );
    for (const partial of partials) {
      assert.ok(
        streamed.some((s) => s.text.includes(partial)),
        `${c.id}: WeCom got the partial snapshot ${JSON.stringify(partial)} of ${msg}, but the bubble never showed it ` +
          `with data-streaming="true"; states seen: ${JSON.stringify(states)}`,
      );
    }
    if (partials.length >= 2) {
      assert.ok(
        new Set(streamed.map((s) => s.text)).size >= 2,
        `${c.id}: ${partials.length} partial snapshots, but the streaming bubble did not grow: ${JSON.stringify(streamed)}`,
      );
    }
    // Without partial snapshots the answer was complete at WeCom's first refresh: nothing to grow.
  });
});

test('the Official Account’s 5 s window counts down to the passive reply', { skip: QUICK && 'quick run', timeout: 60_000 }, async () => {
  const c = chat('oa');
  assert.ok(c, 'GET /sandbox/chats has no oa chat with a composer');
  await explained(desktop, c.id, async () => {
    const { page } = desktop;
    await selectChat(page, c.id);
    const body = `你好 倒计时 ${tag()}`;
    const msg = await sendText(page, body);
    await botBubble(page, msg, body, c.id);
    const countdown = page.locator(`${sel.message('user', msg)} [data-testid="countdown"]`);
    await until(async () => /passive reply/.test((await countdown.textContent({ timeout: 1000 })) || ''), {
      timeout: 10_000,
      message: async () =>
        `${c.id}: the countdown on ${msg} does not end with "passive reply" (it shows ${JSON.stringify(
          await countdown.textContent({ timeout: 500 }).catch(() => 'no [data-testid="countdown"]'),
        )})`,
    });
    const seen = (await page.evaluate((m) => window.__wxbridgeRecord.countdowns.filter((x) => x.msg === m), msg)).map(
      (x) => x.text,
    );
    const ticks = seen.filter((text) => /\d\.\d s/.test(text));
    console.log(`# ${c.id}: countdown ${seen.join(' → ')}`);
    assert.ok(ticks.length >= 1, `${c.id}: the countdown never showed seconds like "4.3 s"; it showed ${JSON.stringify(seen)}`);
    // A reply slower than a few ticks must have shown several values.
    const hops = await (async () => {
      await openTrace(page, page.locator(sel.message('user', msg)).first());
      const h = await traceHas(page, [['window'], ['callback']], `${c.id} trace`);
      await closeTrace(page);
      return h;
    })();
    const callbackMs = Math.max(
      0,
      ...hops.filter((h) => h.kind === 'callback').map((h) => Number(/"ms"\s*:\s*(\d+)/.exec(h.text)?.[1] ?? 0)),
    );
    if (callbackMs >= 400) {
      assert.ok(
        new Set(ticks).size >= 2,
        `${c.id}: the callback took ${callbackMs} ms but the countdown did not tick (it showed ${JSON.stringify(seen)})`,
      );
    }
  });
});

test('an image goes to the WeCom app and comes back', { skip: QUICK && 'quick run', timeout: 60_000 }, async () => {
  const c = chats.find((x) => x.channel === 'wecom' && x.composer && x.attach);
  assert.ok(c, 'GET /sandbox/chats has no wecom chat with a composer and attach');
  await explained(desktop, c.id, async () => {
    const { page } = desktop;
    await selectChat(page, c.id);
    const file = join(tmp, 'squares.png');
    writeFileSync(file, Buffer.from(PNG_BASE64, 'base64'));
    await page.locator(sel.composer).fill('');
    const msg = await sayVia(
      page,
      async () => {
        const said = page.waitForResponse(isSay, { timeout: 1500 }).catch(() => null);
        await page.locator(sel.attach).setInputFiles(file);
        // Attaching either sends at once or waits for the send button.
        if (!(await said)) await page.locator(sel.send).click();
      },
      'sending an image',
    );
    const loaded = (side) =>
      page
        .waitForFunction(
          (q) => [...document.querySelectorAll(q)].some((img) => img.complete && img.naturalWidth > 0),
          `${sel.message(side, msg)} img[data-testid="image"]`,
          { timeout: WAIT },
        )
        .catch(async () => {
          const imgs = await page
            .locator(`${sel.message(side, msg)} img`)
            .evaluateAll((els) => els.map((e) => ({ src: e.src, testid: e.dataset.testid, naturalWidth: e.naturalWidth })));
          throw new Error(
            `${c.id}: no loaded img[data-testid="image"] (naturalWidth > 0) in a ${side} bubble of ${msg}; images there: ${JSON.stringify(imgs)}`,
          );
        });
    await loaded('user');
    await loaded('bot');
  });
});

test('the trace of a message lists every hop and no secret', { timeout: 60_000 }, async () => {
  const c = chat('wecom');
  assert.ok(c && answered.has(c.id), 'the WeCom app round trip did not pass');
  await explained(desktop, c.id, async () => {
    const { page } = desktop;
    const { msg, text } = answered.get(c.id);
    await selectChat(page, c.id);
    const bubble = page.locator(sel.message('bot', msg), { hasText: text }).first();
    await openTrace(page, bubble);
    const hops = await traceHas(page, [['callback'], ['queued'], ['bot'], ['api', 'send']], `${c.id} trace of ${msg}`);
    const trace = page.locator(sel.trace);
    // In time order, each the message's own.
    const ats = hops.map((h) => Number(h.json?.at));
    assert.ok(
      ats.every((at, i) => Number.isFinite(at) && (i === 0 || at >= ats[i - 1])),
      `the trace of ${msg} is not in time order (at: ${ats.join(', ')}; kinds: ${hops.map((h) => h.kind).join(', ')})`,
    );
    const strangers = hops.filter((h) => h.json?.msg != null && h.json.msg !== msg);
    assert.deepEqual(
      strangers.map((h) => `${h.kind} of ${h.json.msg}`),
      [],
      `the trace of ${msg} lists hops of other messages`,
    );
    assertNoSecrets(hops.map((h) => h.text).join('\n'), `the trace of ${msg}`);
    assertNoSecrets((await trace.textContent()) || '', `the trace panel`);
    assertNoSecrets(await page.content(), 'the page');
    assertNoSecrets(await fetchEventsText(), 'GET /events');
    // Each hop: an offset from the first, its kind, and its JSON behind a <details>.
    const first = page.locator(`${sel.trace} ${sel.hop}`).first();
    assert.match((await first.textContent()) || '', /\+\s*\d+\s*ms/, 'the first hop shows no time offset like "+0 ms"');
    assert.ok((await page.locator(`${sel.trace} ${sel.hop} details`).count()) > 0, 'no hop has a <details> with its JSON');
    await closeTrace(page);
  });
});

test('keyboard only: Tab to the composer, Shift+Enter, Enter sends', { skip: QUICK && 'quick run', timeout: 60_000 }, async () => {
  const c = chat('ilink') || chat('wecom_kf') || chat('wecom');
  await explained(desktop, c.id, async () => {
    const { page } = desktop;
    // Choose the chat from the keyboard: focus its list item, Enter.
    await page.locator(sel.chat(c.id)).focus();
    await page.keyboard.press('Enter');
    await until(async () => page.locator(sel.composer).isEditable(), {
      timeout: 5000,
      message: `Enter on the focused ${sel.chat(c.id)} did not open the chat`,
    });
    // Tab along until the composer has the focus.
    const path = [];
    await until(
      async () => {
        const at = await page.evaluate(() => {
          const e = document.activeElement;
          return e?.dataset?.testid || e?.getAttribute('aria-label') || e?.tagName;
        });
        if (at === 'composer') return true;
        path.push(at);
        await page.keyboard.press('Tab');
        return false;
      },
      {
        timeout: 15_000,
        interval: 0,
        message: () => `Tab never reached the composer from the chat list; focus went ${path.slice(0, 40).join(' → ')}`,
      },
    );
    assert.ok(path.length <= 80, `the composer is ${path.length} Tab presses from the chat list`);
    const part1 = `你好 键盘 ${tag()}`;
    const part2 = `第二行 ${tag()}`;
    const before = await page.locator(sel.message('user')).count();
    await page.keyboard.type(part1);
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type(part2);
    const value = await page.locator(sel.composer).inputValue();
    assert.equal(value, `${part1}\n${part2}`, 'Shift+Enter did not insert a newline in the composer');
    assert.equal(await page.locator(sel.message('user')).count(), before, 'Shift+Enter sent the message');
    const msg = await sayVia(page, () => page.keyboard.press('Enter'), 'Enter in the composer');
    const bubble = await botBubble(page, msg, part1, c.id);
    assert.ok(((await bubble.textContent()) || '').includes(part2), `${c.id}: the echo lost the second line`);
    assert.equal(await page.locator(sel.composer).inputValue(), '', 'the composer is not emptied after sending');
  });
});

test('desktop screenshot: the AI-bot group answered, with its trace', { skip: QUICK && 'quick run', timeout: 60_000 }, async () => {
  const c = chat('wecom_aibot');
  assert.ok(c && answered.has(c.id), 'the AI-bot round trip did not pass');
  await explained(desktop, c.id, async () => {
    const { page } = desktop;
    const { msg, text } = answered.get(c.id);
    await selectChat(page, c.id);
    await openTrace(page, page.locator(sel.message('bot', msg), { hasText: text }).first());
    await traceHas(page, [['callback'], ['stream']], `${c.id} trace of ${msg}`);
    assert.ok(await page.locator(sel.message('bot', msg)).first().isVisible(), 'the answered bubble is hidden behind the trace');
    const file = await screenshot(page, 'sandbox-desktop.png');
    console.log(`# screenshot ${file}`);
    await closeTrace(page);
  });
});

test('phone width: chat list and a conversation without horizontal scrolling', { skip: QUICK && 'quick run', timeout: 90_000 }, async () => {
  const phone = await openPage(PHONE, { isMobile: true, hasTouch: true });
  const c = chat('wecom');
  try {
    await explained(phone, c.id, async () => {
      const { page } = phone;
      await page.goto(`${BASE}/`);
      await page.locator(`${sel.live}[data-state="live"]`).waitFor({ state: 'attached' });
      // The chat list, in a top bar or a drawer.
      const items = page.locator('[data-testid="chat"]');
      await items.first().waitFor({ state: 'attached' });
      if (!(await items.first().isVisible())) await openChatList(page);
      assert.ok(await page.locator(sel.chat(c.id)).isVisible(), `phone: the chat list item ${sel.chat(c.id)} is not visible`);
      let width = await scrollWidth(page);
      assert.ok(width <= PHONE.width + 1, `phone: the chat list scrolls sideways (scrollWidth ${width} > ${PHONE.width})`);
      // A conversation: history from the replay, a new message answered.
      await selectChat(page, c.id);
      const body = `你好 手机 ${tag()}`;
      const msg = await sendText(page, body);
      const bubble = await botBubble(page, msg, body, c.id);
      await bubble.evaluate((e) => e.scrollIntoView({ block: 'nearest' }));
      const box = await bubble.boundingBox();
      assert.ok(box && box.x >= 0 && box.x + box.width <= PHONE.width + 1, `phone: the bot bubble sticks out: ${JSON.stringify(box)}`);
      const composer = await page.locator(sel.composer).boundingBox();
      assert.ok(
        composer && composer.x >= 0 && composer.x + composer.width <= PHONE.width + 1,
        `phone: the composer sticks out: ${JSON.stringify(composer)}`,
      );
      width = await scrollWidth(page);
      assert.ok(width <= PHONE.width + 1, `phone: the conversation scrolls sideways (scrollWidth ${width} > ${PHONE.width})`);
      const file = await screenshot(page, 'sandbox-phone.png');
      console.log(`# screenshot ${file}`);
      // The trace as a full-screen overlay.
      const trace = await openTrace(page, bubble);
      const tbox = await trace.boundingBox();
      assert.ok(tbox && tbox.width >= PHONE.width - 2, `phone: the trace panel is not full width: ${JSON.stringify(tbox)}`);
      width = await scrollWidth(page);
      assert.ok(width <= PHONE.width + 1, `phone: the open trace scrolls sideways (scrollWidth ${width} > ${PHONE.width})`);
      await closeTrace(page);
      const errors = phone.problems.filter((p) => !p.startsWith('console.warning'));
      assert.deepEqual(errors, [], `phone: the page reported errors:\n${errors.join('\n')}`);
    });
  } finally {
    await phone.context.close();
  }
});

test('the page logged no errors', { timeout: 10_000 }, async () => {
  const errors = desktop.problems.filter((p) => !p.startsWith('console.warning'));
  assert.deepEqual(errors, [], `the page reported errors:\n${errors.join('\n')}`);
});
