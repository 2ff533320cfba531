// Drives Debian's Chromium (playwright-core, explicit executablePath: no browser download)
// through the console against a real server. Run by tests/browser/test_console.py:
//   node console.mjs <scenario>   with CONSOLE_* settings in the environment.
// Prints one JSON line (what was seen) as its last line; screenshots go to CONSOLE_OUT.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import path from "node:path";

const BASE = process.env.CONSOLE_BASE_URL;
const OUT = process.env.CONSOLE_OUT;
const ADMIN_EMAIL = process.env.CONSOLE_ADMIN_EMAIL;
const ADMIN_PASSWORD = process.env.CONSOLE_ADMIN_PASSWORD;
const USER_EMAIL = process.env.CONSOLE_USER_EMAIL;
const TIMEOUT = 10_000;
mkdirSync(OUT, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
const result = { consoleErrors: [], pageErrors: [], screenshots: [], steps: [] };

async function newPage(viewport = { width: 1280, height: 860 }) {
  const context = await browser.newContext({ viewport });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (message) => {
    if (message.type() === "error") result.consoleErrors.push({ text: message.text(), url: message.location().url || "" });
  });
  page.on("pageerror", (error) => result.pageErrors.push(String(error && error.stack ? error.stack : error)));
  return page;
}

async function shot(page, name) {
  const file = path.join(OUT, `${String(result.screenshots.length + 1).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  result.screenshots.push(file);
  result.steps.push(name);
}

async function signIn(page, email, password) {
  await page.goto(`${BASE}/`);
  await page.fill("#email", email);
  await page.fill("#password", password);
  await page.click("#sign-in");
  await page.waitForSelector("#sign-out");
}

const text = (page, selector) => page.locator(selector).innerText();

async function adminScenario() {
  const page = await newPage();
  const response = await page.goto(`${BASE}/`);
  result.csp = response.headers()["content-security-policy"] || null;
  await page.waitForSelector("#sign-in");
  await shot(page, "sign-in");

  // Wrong password: shown plainly.
  await page.fill("#email", ADMIN_EMAIL);
  await page.fill("#password", "not the password");
  await page.click("#sign-in");
  await page.waitForFunction(() => document.querySelector("#login-error").textContent.length > 0);
  result.wrongPasswordError = await text(page, "#login-error");
  await shot(page, "wrong-password");

  // Rate limited login (another account; the server allows few failures in tests).
  for (let attempt = 0; attempt < 6; attempt += 1) {
    await page.fill("#email", USER_EMAIL);
    await page.fill("#password", `wrong ${attempt}`);
    await page.click("#sign-in");
    await page.waitForFunction((n) => document.querySelector("#sign-in").disabled === false, attempt);
    result.rateLimitError = await text(page, "#login-error");
    if (result.rateLimitError.startsWith("Rate limited")) break;
  }
  await shot(page, "rate-limited");

  // Sign in as the admin.
  await page.fill("#email", ADMIN_EMAIL);
  await page.fill("#password", ADMIN_PASSWORD);
  await page.click("#sign-in");
  await page.waitForSelector("#sign-out");
  await page.waitForSelector("#conversation-list li, #conversations-unavailable", { state: "attached" });
  result.whoAfterSignIn = await text(page, ".who");
  result.adminNav = await page.locator(".nav a").allInnerTexts();
  result.conversationsUnavailable = await page.locator("#conversations-unavailable").count() > 0;
  await shot(page, "signed-in-chat");

  // Users: deactivate, activate, make admin.
  await page.click("text=Users");
  const row = page.locator(`#users-table tr[data-email="${USER_EMAIL}"]`);
  await row.waitFor();
  await row.locator("button.deactivate").click();
  await page.locator(`#users-table tr[data-email="${USER_EMAIL}"] td.active`).filter({ hasText: "deactivated" }).waitFor();
  result.afterDeactivate = await page.locator(`#users-table tr[data-email="${USER_EMAIL}"] td.active`).innerText();
  await shot(page, "users-deactivated");
  await page.locator(`#users-table tr[data-email="${USER_EMAIL}"] button.activate`).click();
  await page.locator(`#users-table tr[data-email="${USER_EMAIL}"] td.active`).filter({ hasText: /^active$/ }).waitFor();
  await page.locator(`#users-table tr[data-email="${USER_EMAIL}"] button.make-admin`).click();
  await page.locator(`#users-table tr[data-email="${USER_EMAIL}"] td.role`).filter({ hasText: "admin" }).waitFor();
  result.afterMakeAdmin = await page.locator(`#users-table tr[data-email="${USER_EMAIL}"] td.role`).innerText();
  await page.locator(`#users-table tr[data-email="${USER_EMAIL}"] button.make-user`).click();
  await page.locator(`#users-table tr[data-email="${USER_EMAIL}"] td.role`).filter({ hasText: /^user$/ }).waitFor();
  await shot(page, "users");

  // API keys: issue one (models: demo only; 60 rpm), see the secret once, copy it.
  await page.click("text=API keys");
  await page.waitForSelector("#issue-key-form");
  // Owned by the registered user (not the bootstrap admin, whom other test modules share).
  await page.selectOption("#key-user", { label: USER_EMAIL });
  await page.fill("#key-name", "browser-key");
  await page.check('input[name="key-models-mode"][value="some"]');
  await page.check('input[name="key-models"][value="demo"]');
  await page.fill("#key-rpm", "60");
  await page.click("#issue-key");
  await page.waitForSelector("#new-key-secret");
  result.secret = await page.inputValue("#new-key-secret");
  await page.click("#copy-secret");
  await page.locator("#secret-box [role=status]").filter({ hasText: "Copied." }).waitFor();
  result.clipboard = await page.evaluate(() => navigator.clipboard.readText());
  await page.locator('#keys-table tr[data-name="browser-key"]').waitFor();
  result.keyRow = await page.locator('#keys-table tr[data-name="browser-key"]').innerText();
  await shot(page, "api-key-issued");
  await page.click("#dismiss-secret");
  result.secretGoneAfterDismiss = (await page.locator("#new-key-secret").count()) === 0;
  await page.reload();
  await page.waitForSelector('#keys-table tr[data-name="browser-key"]');
  result.secretInPageAfterReload = (await page.content()).includes(result.secret);
  result.secretInStorage = await page.evaluate((s) => JSON.stringify({ ...sessionStorage, ...localStorage }).includes(s), result.secret);
  await shot(page, "api-keys");

  // Usage: one real completion with the issued key first (usage is written behind the
  // request, within about a second), then the admin's usage page must chart it.
  const completion = await page.evaluate(async (key) => {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: "hello" }] }),
    });
    return response.status;
  }, result.secret);
  result.usageCompletionStatus = completion;
  await page.waitForTimeout(1500);
  await page.click("text=Usage");
  await page.waitForSelector("#usage-chart, #usage-unavailable, #usage-output p");
  result.usageChart = (await page.locator("#usage-chart").count()) > 0;
  result.usageUnavailable = (await page.locator("#usage-unavailable").count()) > 0;
  await shot(page, "usage");

  // The access token is refreshed before it expires: pretend the refresh moment has come.
  const KEY = "agent-api-console-session";
  const before = await page.evaluate((key) => {
    const session = JSON.parse(sessionStorage.getItem(key));
    sessionStorage.setItem(key, JSON.stringify({ ...session, refreshAt: Date.now() - 1 }));
    return session;
  }, KEY);
  await page.reload();
  await page.waitForFunction(([key, old]) => JSON.parse(sessionStorage.getItem(key) || "{}").access !== old, [KEY, before.access]);
  await page.waitForSelector("#usage-chart, #usage-unavailable, #usage-output p");
  const after = await page.evaluate((key) => JSON.parse(sessionStorage.getItem(key)), KEY);
  result.refreshed = after.access !== before.access && after.refresh !== before.refresh && after.refreshAt > Date.now();
  result.stillSignedInAfterRefresh = (await page.locator("#sign-out").count()) === 1;

  // An ended session (logged out elsewhere) is said plainly and leads back to sign-in.
  await page.evaluate(async () => {
    const session = JSON.parse(sessionStorage.getItem("agent-api-console-session"));
    await fetch("/v1/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${session.access}` } });
  });
  await page.click("text=Users");
  await page.waitForSelector("#sign-in");
  result.expiredSessionMessage = await text(page, "#login-error");
  await shot(page, "session-expired");
  await page.context().close();
}

async function narrowScenario() {
  // A phone-sized screen, signed in with the API key issued above.
  const page = await newPage({ width: 390, height: 844 });
  await page.goto(`${BASE}/`);
  await page.click("#tab-key");
  await page.fill("#api-key", process.env.CONSOLE_API_KEY);
  await page.click("#sign-in");
  await page.waitForSelector("#sign-out");
  await page.waitForSelector("#conversation-list li, #conversations-unavailable", { state: "attached" });
  result.narrowWho = await text(page, ".who");
  result.narrowNav = await page.locator(".nav a").allInnerTexts();
  result.narrowOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  result.chatState = (await page.locator("#conversations-unavailable").count()) ? "conversations-unavailable" : "conversations";
  // The Markdown renderer the chat uses, fed hostile model output.
  result.markdown = await page.evaluate(async () => {
    window.__alerted = false;
    window.alert = () => { window.__alerted = true; };
    const { renderMarkdown } = await import("/console/markdown.js");
    const box = document.createElement("div");
    box.append(renderMarkdown("Hi **bold** *it* `code` <img src=x onerror=alert(1)>\n\n```\n<script>alert(1)</script>\n```\n\n- [ok](https://example.com/)\n- [bad](javascript:alert(1))"));
    document.body.append(box);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const seen = {
      elements: [...box.querySelectorAll("*")].map((e) => e.tagName),
      links: [...box.querySelectorAll("a")].map((a) => a.href),
      text: box.textContent,
      alerted: window.__alerted,
    };
    box.remove();
    return seen;
  });
  // The agent event stream parser the chat uses, fed a stream cut every 7 bytes.
  result.sse = await page.evaluate(async () => {
    const { readEventStream } = await import("/console/api.js");
    const text = ": ping\r\nevent: run.started\r\nid: 1\r\ndata: {\"run_id\": \"r\"}\r\n\r\n"
      + "event: message.delta\nid: 2\ndata: {\"delta\":\ndata: \"é ✓\"}\n\n"
      + "event: done\rid: 3\rdata: [DONE]\r\r";
    const bytes = new TextEncoder().encode(text);
    const body = new ReadableStream({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 7) controller.enqueue(bytes.slice(i, i + 7));
        controller.close();
      },
    });
    const events = [];
    await readEventStream(body, (name, data, id) => events.push([name, data, id]));
    return events;
  });
  await shot(page, "narrow-signed-in-with-key");
  await page.click("#sign-out");
  await page.waitForSelector("#sign-in");
  result.afterSignOut = await text(page, "#login-error");
  result.storageAfterSignOut = await page.evaluate(() => sessionStorage.length);
  await page.context().close();
}

// Needs the conversations API (POST /v1/conversations..., the agent event stream, approvals).
async function chatScenario() {
  const page = await newPage();
  await signIn(page, ADMIN_EMAIL, ADMIN_PASSWORD);
  await page.waitForSelector("#conversation-list li");
  // A conversation with the demo model and the calculator.
  await page.click("#new-conversation");
  await page.fill("#new-title", "Arithmetic");
  await page.selectOption("#new-model", "demo");
  for (const box of await page.locator("input[name=tool]").all()) await box.setChecked((await box.getAttribute("value")) === "calculator");
  await page.click("#create-conversation");
  await page.waitForSelector("#composer");
  await page.fill("#composer", "What is 6*7?");
  await page.press("#composer", "Enter");
  await page.locator('.tool-card .status').filter({ hasText: "success" }).waitFor();
  await page.locator(".run-end[data-status=completed]").last().waitFor();
  result.calculatorCard = await page.locator(".tool-card").first().innerText();
  result.answer = await page.locator(".msg.assistant").last().innerText();
  await shot(page, "chat-calculator");
  // Shift+Enter makes a new line instead of sending.
  await page.fill("#composer", "first line");
  await page.press("#composer", "Shift+Enter");
  await page.keyboard.type("second line");
  result.shiftEnterValue = await page.inputValue("#composer");
  await page.fill("#composer", "");

  // An approval: a model that asks for http_get (which needs approval).
  await page.click("#new-conversation");
  await page.fill("#new-title", "Approval");
  await page.selectOption("#new-model", process.env.CONSOLE_APPROVAL_MODEL);
  for (const box of await page.locator("input[name=tool]").all()) await box.setChecked((await box.getAttribute("value")) === "http_get");
  await page.click("#create-conversation");
  await page.waitForSelector("#composer");
  await page.fill("#composer", "Fetch https://example.com/ please");
  await page.press("#composer", "Enter");
  await page.waitForSelector("#approval");
  result.approvalBeforeReload = await page.locator("#approval").innerText();
  await shot(page, "approval-required");
  await page.reload();
  await page.waitForSelector("#approval");
  result.approvalAfterReload = await page.locator("#approval").innerText();
  await shot(page, "approval-after-reload");
  await page.click("#approval button.approve");
  await page.locator(".run-end[data-status=completed]").last().waitFor();
  result.afterApproval = await page.locator("#messages").innerText();
  await shot(page, "approval-approved-run-finished");

  // Cancel: a long answer is streaming; the Cancel button stops the run.
  await page.fill("#composer", "Tell me a long story");
  await page.press("#composer", "Enter");
  await page.locator(".msg.assistant").filter({ hasText: "story1" }).last().waitFor();
  result.cancelButtonShownWhileRunning = await page.isVisible("#cancel-run");
  await page.click("#cancel-run");
  await page.locator(".run-end[data-status=cancelled]").last().waitFor();
  result.cancelledRunEnd = true;
  result.partialAfterCancel = await page.locator(".msg.assistant").last().innerText();
  await shot(page, "run-cancelled");
  await page.context().close();
}

const scenarios = { admin: adminScenario, narrow: narrowScenario, chat: chatScenario };
try {
  await scenarios[process.argv[2]]();
  result.ok = true;
} catch (error) {
  result.ok = false;
  result.error = String(error && error.stack ? error.stack : error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
