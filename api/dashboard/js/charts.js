// The usage charts (Chart.js, vendored). Bars are plotted in integer micro-credits, so the
// chart only positions exact integers; every label and tooltip shows the API's decimal string.

import { formatCount, formatCredits, formatMicros, toMicros } from "./money.js";

const INK = "#1f2937";
const GRID = "#e5e7eb";
const BAR = "#2563eb";
const BAR_MODEL = "#0f766e";
const DAY_MS = 86400000;

/** Every UTC day from..to (YYYY-MM-DD, both inclusive). */
export function daysBetween(from, to) {
  const out = [];
  const end = Date.parse(to + "T00:00:00Z");
  for (let t = Date.parse(from + "T00:00:00Z"); t <= end; t += DAY_MS) {
    out.push(new Date(t).toISOString().slice(0, 10));
  }
  return out;
}

/** One row per day of the range: the API's group for that day, or zero usage. */
export function fillDays(groups, from, to) {
  const byDay = new Map(groups.map((g) => [g.key, g]));
  return daysBetween(from, to).map((day) => byDay.get(day) || { key: day, events: 0, cost: "0" });
}

function plotted(cost) {
  // Integer micro-credits: exact in a double up to 9 billion credits.
  return Number(toMicros(cost));
}

function axisLabel(value) {
  return formatMicros(BigInt(Math.round(value)), 0);
}

function baseOptions(horizontal) {
  const valueAxis = {
    beginAtZero: true,
    ticks: { color: INK, callback: axisLabel, maxTicksLimit: 6 },
    grid: { color: GRID },
    title: { display: true, text: "credits", color: INK },
  };
  const categoryAxis = { ticks: { color: INK, autoSkip: true }, grid: { display: false } };
  return {
    animation: false,
    responsive: true,
    maintainAspectRatio: false,
    indexAxis: horizontal ? "y" : "x",
    plugins: { legend: { display: false } },
    scales: horizontal ? { x: valueAxis, y: categoryAxis } : { x: categoryAxis, y: valueAxis },
  };
}

function replace(canvas, config) {
  const previous = window.Chart.getChart(canvas);
  if (previous) previous.destroy();
  return new window.Chart(canvas, config);
}

/** Cost per day: one bar for every day of the range, zero where nothing was used. */
export function drawDaily(canvas, rows) {
  const options = baseOptions(false);
  options.plugins.tooltip = {
    callbacks: {
      label: (item) => {
        const row = rows[item.dataIndex];
        return `${formatCredits(row.cost)} credits, ${formatCount(row.events)} events`;
      },
    },
  };
  return replace(canvas, {
    type: "bar",
    data: {
      labels: rows.map((r) => r.key.slice(5)),
      datasets: [
        {
          label: "cost",
          data: rows.map((r) => plotted(r.cost)),
          backgroundColor: BAR,
          maxBarThickness: 48,
        },
      ],
    },
    options,
  });
}

/** Cost per model, most expensive first (the API's order). */
export function drawModels(canvas, groups) {
  const options = baseOptions(true);
  options.plugins.tooltip = {
    callbacks: {
      label: (item) => {
        const g = groups[item.dataIndex];
        return `${formatCredits(g.cost)} credits, ${formatCount(g.events)} events`;
      },
    },
  };
  return replace(canvas, {
    type: "bar",
    data: {
      labels: groups.map((g) => g.key),
      datasets: [
        {
          label: "cost",
          data: groups.map((g) => plotted(g.cost)),
          backgroundColor: BAR_MODEL,
          maxBarThickness: 28,
        },
      ],
    },
    options,
  });
}
