// DOM helpers: text is always set with textContent, so nothing from the API is parsed as HTML.

import { formatCount, formatCredits, perMille, perMilleText, toMicros } from "./money.js";

export const $ = (id) => document.getElementById(id);

export function show(id, visible) {
  $(id).hidden = !visible;
}

export function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

/** A table cell holding an amount: six places (columns align), the API's string in data-value. */
export function amountCell(text, tag = "td") {
  const cell = el(tag, formatCredits(text, 6), "num amount");
  cell.dataset.value = text;
  if (text.startsWith("-")) cell.classList.add("negative");
  return cell;
}

export function setAmount(id, text) {
  const node = $(id);
  node.textContent = formatCredits(text, 6); // six places, as the ledger keeps them
  node.dataset.value = text;
  node.classList.toggle("negative", text.startsWith("-"));
}

export function fillRows(tbodyParent, rows, cellsOf) {
  const tbody = $(tbodyParent).querySelector("tbody");
  tbody.replaceChildren(
    ...rows.map((row) => {
      const tr = document.createElement("tr");
      tr.append(...cellsOf(row));
      return tr;
    }),
  );
}

/** The monthly cap bar: spend, then what reservations hold, as BigInt per-mille widths; the
 * 50/80/100 % marks are in the stylesheet. */
export function renderCap(balance) {
  const fill = $("cap-fill");
  const heldBar = $("cap-held");
  const bar = $("capbar");
  const spend = balance.monthly_spend;
  const held = typeof balance.held === "string" ? toMicros(balance.held) : 0n;
  if (balance.monthly_cap === null || balance.monthly_cap === undefined) {
    $("cap-text").textContent = `${formatCredits(spend)} spent this month; no monthly cap.`;
    bar.hidden = true;
    return;
  }
  bar.hidden = false;
  const cap = toMicros(balance.monthly_cap);
  const spent = toMicros(spend);
  const pm = perMille(spent, cap) ?? 0n;
  const shown = pm > 1000n ? 1000n : pm;
  let withHeld = perMille(spent + held, cap) ?? 0n;
  if (withHeld > 1000n) withHeld = 1000n;
  fill.style.width = `${perMilleText(shown)}%`;
  fill.className = "fill " + (pm >= 1000n ? "over" : pm >= 800n ? "high" : pm >= 500n ? "mid" : "");
  heldBar.style.left = `${perMilleText(shown)}%`;
  heldBar.style.width = `${perMilleText(withHeld - shown)}%`;
  heldBar.hidden = held <= 0n;
  bar.setAttribute("aria-valuenow", perMilleText(shown));
  bar.setAttribute("aria-valuetext", `${perMilleText(pm)} % of the cap spent`);
  const heldText = held > 0n ? `, ${formatCredits(balance.held)} more held by reservations` : "";
  const left = balance.cap_remaining === null ? "" : `; ${formatCredits(balance.cap_remaining)} left`;
  $("cap-text").textContent =
    `${formatCredits(spend)} of ${formatCredits(balance.monthly_cap)} credits spent ` +
    `(${perMilleText(pm)} %)${heldText}${left}.`;
}

export function countCell(n) {
  return el("td", formatCount(n), "num");
}
