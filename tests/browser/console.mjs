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

// Clicks a decision in the approval panel; returns every text the last tool card's status
// showed from just before the click until its tool.result arrived.
async function decide(page, button) {
  await page.evaluate(() => {
    const status = [...document.querySelectorAll(".tool-card .status")].pop();
    window.__cardStates = [status.textContent];
    new MutationObserver(() => window.__cardStates.push(status.textContent))
      .observe(status, { childList: true, characterData: true, subtree: true });
  });
  await page.click(`#approval ${button}`);
  await page.waitForFunction(() => ["success", "error", "rejected"].includes(window.__cardStates.at(-1)));
  return page.evaluate(() => window.__cardStates);
}

const listTitles = (page) => page.locator("#conversation-list li .title").allInnerTexts();

// Waits until the list's titles satisfy one check (no eval under the page's CSP):
// "count" (that many), "first" (the first is `value`), "lacks" (non-empty, without `value`),
// "only" (exactly [`value`]).
async function waitForList(page, check, value) {
  await page.waitForFunction(([kind, wanted]) => {
    const titles = [...document.querySelectorAll("#conversation-list li .title")].map((e) => e.textContent);
    if (kind === "count") return titles.length === wanted;
    if (kind === "first") return titles[0] === wanted;
    if (kind === "lacks") return titles.length > 0 && !titles.includes(wanted);
    return titles.length === 1 && titles[0] === wanted;
  }, [check, value]);
}

// The conversation list of a user with more conversations than one page (created through
// the API by the test): newest first, Load more, rename, archive and back, delete.
async function conversationsScenario() {
  const page = await newPage();
  await signIn(page, process.env.CONSOLE_LIST_EMAIL, process.env.CONSOLE_LIST_PASSWORD);
  await page.waitForSelector("#conversation-list li .title");
  result.firstPage = await listTitles(page);
  result.moreShownOnFirstPage = await page.isVisible("#more-conversations");
  await shot(page, "conversations-first-page");
  await page.click("#more-conversations");
  await waitForList(page, "count", Number(process.env.CONSOLE_LIST_COUNT));
  result.allTitles = await listTitles(page);
  result.moreShownAfterLastPage = await page.isVisible("#more-conversations");
  await shot(page, "conversations-all-loaded");

  // Rename the newest one: the header and the list say the new title.
  const newest = result.allTitles[0];
  await page.locator("#conversation-list a", { hasText: newest }).click();
  await page.locator("#conversation-title", { hasText: newest }).waitFor();
  result.openedIsActiveInList = await page.locator("#conversation-list a.active .title").innerText();
  await page.click("#rename");
  await page.fill("#rename-input", "Renamed in the browser");
  await page.press("#rename-input", "Enter");
  await page.locator("#conversation-title", { hasText: "Renamed in the browser" }).waitFor();
  await waitForList(page, "first", "Renamed in the browser");
  result.listAfterRename = await listTitles(page);
  await shot(page, "conversation-renamed");

  // Archive it: gone from the active list, in the archived one; unarchive brings it back.
  await page.click("#archive");
  await waitForList(page, "lacks", "Renamed in the browser");
  result.archiveNotice = await page.locator("#notices").innerText();
  result.activeAfterArchive = await listTitles(page);
  await page.selectOption("#conversation-status", "archived");
  await waitForList(page, "only", "Renamed in the browser");
  result.archivedList = await listTitles(page);
  await shot(page, "conversation-archived");
  await page.locator("#conversation-list a", { hasText: "Renamed in the browser" }).click();
  await page.locator("#archive", { hasText: "Unarchive" }).waitFor();
  result.archiveButtonOfArchived = await page.locator("#archive").innerText();
  await page.click("#archive");
  await waitForList(page, "first", "Renamed in the browser");
  result.restoreNotice = await page.locator("#notices").innerText();
  result.activeAfterRestore = await listTitles(page);

  // Delete the second newest: asks once more, then it is gone.
  const victim = result.activeAfterRestore[1];
  result.deleted = victim;
  await page.locator("#conversation-list a", { hasText: victim }).click();
  await page.locator("#conversation-title", { hasText: victim }).waitFor();
  await page.click("#delete");
  result.deleteAsks = await page.locator("#delete").innerText();
  result.listBeforeConfirm = await listTitles(page);
  await page.click("#delete");
  await waitForList(page, "lacks", victim);
  result.deleteNotice = await page.locator("#notices").innerText();
  await page.click("#more-conversations");
  await waitForList(page, "count", Number(process.env.CONSOLE_LIST_COUNT) - 1);
  result.allAfterDelete = await listTitles(page);
  await shot(page, "conversation-deleted");
  await page.context().close();
}

// A model that streams its reasoning (delta.reasoning_content): shown collapsed, opens on click.
async function reasoningScenario() {
  const page = await newPage();
  await signIn(page, ADMIN_EMAIL, ADMIN_PASSWORD);
  await page.waitForSelector("#conversation-list li");
  await page.click("#new-conversation");
  await page.fill("#new-title", "Reasoning");
  await page.selectOption("#new-model", process.env.CONSOLE_APPROVAL_MODEL);
  for (const box of await page.locator("input[name=tool]").all()) await box.setChecked(false);
  await page.click("#create-conversation");
  await page.waitForSelector("#composer");
  await page.fill("#composer", "Think first, then answer");
  await page.press("#composer", "Enter");
  await page.locator(".run-end[data-status=completed]").last().waitFor();
  const bubble = page.locator(".msg.assistant").last();
  const details = bubble.locator("details.reasoning");
  result.reasoningElements = await details.count();
  result.reasoningOpenAtFirst = await details.evaluate((d) => d.open);
  result.reasoningSummary = await details.locator("summary").innerText();
  result.reasoningTextVisibleAtFirst = await details.locator(".reasoning-text").isVisible();
  result.reasoningText = await details.locator(".reasoning-text").textContent();
  result.answerText = await bubble.locator(".body").innerText();
  await shot(page, "reasoning-collapsed");
  await details.locator("summary").click();
  result.reasoningOpenAfterClick = await details.evaluate((d) => d.open);
  result.reasoningTextVisibleAfterClick = await details.locator(".reasoning-text").isVisible();
  result.reasoningShownAfterClick = await details.locator(".reasoning-text").innerText();
  await shot(page, "reasoning-expanded");
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
  result.cardBeforeReload = await page.locator(".tool-card .status").last().innerText();
  await shot(page, "approval-required");
  await page.reload();
  await page.waitForSelector("#approval");
  result.approvalAfterReload = await page.locator("#approval").innerText();
  result.reasonAfterReload = await page.locator("#approval .reason").innerText();
  result.cardAfterReload = await page.locator(".tool-card .status").last().innerText();
  await shot(page, "approval-after-reload");
  result.approvedCardStates = await decide(page, "button.approve");
  await page.locator(".run-end[data-status=completed]").last().waitFor();
  result.afterApproval = await page.locator("#messages").innerText();
  await shot(page, "approval-approved-run-finished");

  // Another gated call, rejected: the card ends "rejected", the model is told.
  await page.fill("#composer", "Fetch it again");
  await page.press("#composer", "Enter");
  await page.waitForSelector("#approval");
  result.secondCardBeforeDecision = await page.locator(".tool-card .status").last().innerText();
  await page.fill("#approval .reject-reason", "not twice");
  result.rejectedCardStates = await decide(page, "button.reject");
  await page.locator(".run-end[data-status=completed]").nth(1).waitFor();
  result.rejectedCard = await page.locator(".tool-card").last().innerText();
  await shot(page, "approval-rejected");

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

const scenarios = {
  admin: adminScenario, narrow: narrowScenario, chat: chatScenario,
  conversations: conversationsScenario, reasoning: reasoningScenario,
};
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
