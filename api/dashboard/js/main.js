// The dashboard's flow: a key in, then the account (user key) or the system view (admin key).
// The page never reads its own address: what it shows is decided by the key alone, and an
// admin's choice of account. The API enforces who may see what; the page only asks.

import { Api, ApiError } from "./api.js";
import { daysBetween, drawDaily, drawModels, fillDays } from "./charts.js";
import { formatCount, formatCredits } from "./money.js";
import { $, amountCell, countCell, el, fillRows, renderCap, setAmount, show } from "./views.js";

const KEY_SLOT = "meterline.dashboard.key"; // sessionStorage: gone when the tab closes
const PAGE_SIZE = 15;
const DEFAULT_DAYS = 14;

const state = {
  api: null,
  scope: null,
  account: null, // the account an admin picked; null for a user key (the key's own)
  tx: { cursors: [null], index: 0, next: null },
};

function message(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

function busy(on) {
  show("loading", on);
  document.body.setAttribute("aria-busy", on ? "true" : "false");
}

function accountParams() {
  return state.account ? { account_id: state.account } : {};
}

function describe(error) {
  if (error instanceof ApiError) {
    if (error.status === 401) return `This key was not accepted: ${error.detail}`;
    if (error.status === 403) return `Not allowed: ${error.detail}`;
    if (error.status === 429) return `Too many requests: ${error.detail}`;
    return `The API answered ${error.status || "nothing"}: ${error.detail}`;
  }
  return `Something went wrong: ${error.message}`;
}

function hideAll() {
  for (const id of ["admin", "account", "who"]) show(id, false);
}

function signOut(text) {
  sessionStorage.removeItem(KEY_SLOT);
  state.api = null;
  state.scope = null;
  state.account = null;
  hideAll();
  show("sign-in", true);
  $("api-key").value = "";
  if (text) message(text);
  else message("");
  $("api-key").focus();
}

function utcToday() {
  return new Date().toISOString().slice(0, 10);
}

function daysAgo(days) {
  return new Date(Date.now() - days * 86400000).toISOString().slice(0, 10);
}

function setRange(days) {
  $("range-from").value = daysAgo(days - 1);
  $("range-to").value = utcToday();
}

// ---- admin -----------------------------------------------------------------------------------

async function loadSystem(system) {
  $("admin-range").textContent = `Usage from ${system.from} to ${system.to} (UTC days)`;
  const tiles = [
    ["Accounts", formatCount(system.accounts), null],
    ["Blocked accounts", formatCount(system.blocked_accounts), null],
    ["Total balance", null, system.total_balance],
    ["Spend in period", null, system.spend],
    ["Events in period", formatCount(system.events), null],
    ["Active accounts", formatCount(system.active_accounts), null],
  ];
  $("system-tiles").replaceChildren(
    ...tiles.map(([label, text, amount]) => {
      const tile = el("div", null, "tile");
      const dd = el("dd", amount === null ? text : formatCredits(amount, 6), "amount");
      if (amount !== null) dd.dataset.value = amount;
      dd.dataset.name = label;
      tile.append(el("dt", label), dd);
      return tile;
    }),
  );
  const top = await state.api.get("/api/v1/admin/credits/analytics/top-spenders", { limit: 10 });
  fillRows("spenders", top.items, (s) => {
    const rank = top.items.indexOf(s) + 1;
    const open = el("button", s.account_id, "link");
    open.type = "button";
    open.addEventListener("click", () => openAccount(s.account_id));
    const name = el("td");
    name.append(open);
    name.dataset.account = s.account_id;
    return [el("td", rank, "num"), name, amountCell(s.spend), countCell(s.events)];
  });
  show("spenders-empty", top.items.length === 0);
  await suggestAccounts("");
}

let suggestTimer = null;

/** Fill the picker's suggestions with the accounts whose id starts with what was typed. */
async function suggestAccounts(prefix) {
  const page = await state.api.get("/api/v1/admin/accounts", { prefix, limit: 20 });
  $("account-options").replaceChildren(
    ...page.items.map((a) => {
      const option = document.createElement("option");
      option.value = a.account_id;
      option.label = `${a.account_id} (tier ${a.tier}, balance ${formatCredits(a.balance)})`;
      return option;
    }),
  );
}

async function openAccount(accountId) {
  message("");
  busy(true);
  try {
    // An admin's choice is checked first: an unknown id is a clear 404, not an empty account.
    await state.api.get(`/api/v1/admin/accounts/${encodeURIComponent(accountId)}`);
    state.account = accountId;
    await loadAccount();
    $("account-title").focus(); // keyboard and screen-reader users land on what they opened
  } catch (error) {
    show("account", false);
    message(describe(error));
  } finally {
    busy(false);
  }
}

// ---- one account -----------------------------------------------------------------------------

async function loadBalance() {
  const balance = await state.api.get("/api/v1/credits/balance", accountParams());
  $("account-id").textContent = balance.account_id;
  $("who-account").textContent = state.scope === "admin" ? "admin key" : balance.account_id;
  $("account-tier").textContent = `tier ${balance.tier}`;
  const status = $("account-status");
  status.textContent = balance.blocked
    ? `blocked: ${String(balance.blocked_reason || "yes").replaceAll("_", " ")}`
    : "active";
  status.className = "pill " + (balance.blocked ? "bad" : "good");
  setAmount("balance", balance.balance);
  setAmount("monthly-spend", balance.monthly_spend);
  // available and held come with reservations; an older API answers without them.
  const holds = typeof balance.available === "string";
  show("available-tile", holds);
  show("held-tile", holds && typeof balance.held === "string");
  if (holds) setAmount("available", balance.available);
  if (typeof balance.held === "string") setAmount("held", balance.held);
  renderCap(balance);
}

async function loadGrants() {
  let answer;
  try {
    answer = await state.api.get("/api/v1/credits/grants", accountParams());
  } catch (error) {
    if (error instanceof ApiError && error.status === 404 && error.code !== "unknown_account") {
      show("grants-card", false); // an API without grants: nothing to show
      return;
    }
    throw error;
  }
  const items = Array.isArray(answer) ? answer : answer.items || answer.grants || [];
  show("grants-card", true);
  fillRows("grants", items, (g) => [
    el("td", g.category),
    amountCell(g.amount),
    amountCell(g.remaining),
    el("td", g.priority, "num"),
    el("td", g.status || "", g.status === "active" ? "ok" : "muted"),
    el("td", g.expires_at ? g.expires_at.replace("T", " ").slice(0, 16) : "never"),
    el("td", g.applies_to && g.applies_to.length ? g.applies_to.join(", ") : "any model"),
  ]);
  show("grants-empty", items.length === 0);
}

async function loadUsage() {
  const from = $("range-from").value;
  const to = $("range-to").value;
  if (!from || !to || to < from) {
    message("Choose a range whose end is on or after its start.");
    return;
  }
  const params = { ...accountParams(), from, to };
  const [byDay, byModel] = await Promise.all([
    state.api.get("/api/v1/credits/usage/stats", { ...params, group_by: "day" }),
    state.api.get("/api/v1/credits/usage/stats", { ...params, group_by: "model" }),
  ]);
  const days = fillDays(byDay.groups, byDay.from, byDay.to);
  $("usage-total").textContent =
    `${formatCredits(byDay.totals.cost)} credits over ${formatCount(byDay.totals.events)} events, ` +
    `${byDay.from} to ${byDay.to} (${daysBetween(byDay.from, byDay.to).length} days, UTC)`;
  $("usage-total").dataset.value = byDay.totals.cost;
  drawDaily($("daily-chart"), days);
  drawModels($("model-chart"), byModel.groups);
  fillRows("daily-table", days, (d) => [el("td", d.key), countCell(d.events), amountCell(d.cost)]);
  fillRows("model-table", byModel.groups, (g) => [
    el("td", g.key),
    countCell(g.events),
    countCell(g.input_tokens + g.cached_input_tokens + g.cache_write_tokens),
    countCell(g.output_tokens),
    amountCell(g.cost),
  ]);
}

async function loadTransactions() {
  const tx = state.tx;
  const page = await state.api.get("/api/v1/credits/transactions", {
    ...accountParams(),
    limit: PAGE_SIZE,
    cursor: tx.cursors[tx.index],
  });
  tx.next = page.next_cursor;
  fillRows("transactions", page.items, (row) => {
    const time = el("td", row.created_at.replace("T", " ").slice(0, 19));
    time.dataset.id = row.id;
    return [
      time,
      el("td", row.type),
      amountCell(row.amount),
      amountCell(row.balance_after),
      el("td", row.model || row.reason || ""),
    ];
  });
  show("tx-empty", page.items.length === 0);
  $("tx-newer").disabled = tx.index === 0;
  $("tx-older").disabled = !tx.next;
  $("tx-page").textContent = `page ${tx.index + 1}`;
}

async function loadAccount() {
  state.tx = { cursors: [null], index: 0, next: null };
  await loadBalance();
  show("account", true); // visible before the charts are drawn, so they get their size
  await Promise.all([loadGrants(), loadUsage(), loadTransactions()]);
}

async function guarded(work) {
  message("");
  busy(true);
  try {
    await work();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      signOut(describe(error));
    } else {
      message(describe(error));
    }
  } finally {
    busy(false);
  }
}

async function exportCsv() {
  const { blob, filename } = await state.api.download(
    "/api/v1/credits/transactions/export",
    accountParams(),
  );
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  message(`Downloaded ${filename}.`, "info");
}

// ---- sign in ---------------------------------------------------------------------------------

async function signIn(key) {
  message("");
  hideAll();
  busy(true);
  state.api = new Api(key);
  try {
    let system = null;
    try {
      system = await state.api.get("/api/v1/admin/credits/analytics/system");
      state.scope = "admin";
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 403)) throw error;
      state.scope = "user"; // a valid key without admin scope
    }
    sessionStorage.setItem(KEY_SLOT, key);
    show("sign-in", false);
    $("who-scope").textContent = state.scope === "admin" ? "admin" : "user";
    show("who", true);
    if (system) {
      await loadSystem(system);
      show("admin", true);
      $("who-account").textContent = "admin key";
    } else {
      await loadAccount();
    }
  } catch (error) {
    signOut(describe(error));
  } finally {
    busy(false);
  }
}

function wire() {
  setRange(DEFAULT_DAYS);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) {
      message("Enter an API key.");
      $("api-key").focus();
      return;
    }
    signIn(key);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("account-input").addEventListener("input", () => {
    clearTimeout(suggestTimer);
    const prefix = $("account-input").value.trim();
    // A short pause after the last key, so a fast typist sends one request, not one per key.
    suggestTimer = setTimeout(
      () => suggestAccounts(prefix).catch((error) => message(describe(error))),
      200,
    );
  });
  $("account-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("account-input").value.trim();
    if (id) openAccount(id);
  });
  $("range-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(loadUsage);
  });
  for (const button of document.querySelectorAll("#range-form [data-days]")) {
    button.addEventListener("click", () => {
      setRange(Number(button.dataset.days));
      guarded(loadUsage);
    });
  }
  $("tx-older").addEventListener("click", () => {
    const tx = state.tx;
    if (!tx.next) return;
    tx.cursors = tx.cursors.slice(0, tx.index + 1).concat([tx.next]);
    tx.index += 1;
    guarded(loadTransactions);
  });
  $("tx-newer").addEventListener("click", () => {
    if (state.tx.index === 0) return;
    state.tx.index -= 1;
    guarded(loadTransactions);
  });
  $("export").addEventListener("click", () => guarded(exportCsv));
  const saved = sessionStorage.getItem(KEY_SLOT);
  if (saved) signIn(saved);
  else $("api-key").focus();
}

// Chart.js is a deferred classic script; module scripts run after it, so window.Chart is set.
wire();
