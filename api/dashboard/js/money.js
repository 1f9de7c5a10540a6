// Credits arrive as decimal strings ("12.500000"); all arithmetic here is on BigInt
// micro-credits, so no amount ever passes through a binary float.

const DECIMAL = /^(-?)(\d+)(?:\.(\d{1,6}))?$/;
export const MICROS = 1000000n;

/** The amount in micro-credits of a decimal string, as a BigInt (throws on anything else). */
export function toMicros(text) {
  const m = DECIMAL.exec(String(text));
  if (!m) throw new Error(`not a decimal amount: ${text}`);
  const micros = BigInt(m[2]) * MICROS + BigInt((m[3] || "").padEnd(6, "0"));
  return m[1] ? -micros : micros;
}

function group(digits) {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** "1,234.50" from micro-credits: thousands grouped, at least `minPlaces` decimals, and every
 * further non-zero decimal kept (up to 6), so the text is always the exact amount. */
export function formatMicros(micros, minPlaces = 2) {
  const negative = micros < 0n;
  const abs = negative ? -micros : micros;
  const whole = group((abs / MICROS).toString());
  let frac = (abs % MICROS).toString().padStart(6, "0").replace(/0+$/, "");
  frac = frac.padEnd(minPlaces, "0");
  return (negative ? "-" : "") + whole + (frac ? "." + frac : "");
}

/** A decimal string from the API, formatted exactly (see formatMicros). */
export function formatCredits(text, minPlaces = 2) {
  return formatMicros(toMicros(text), minPlaces);
}

/** part/whole in tenths of a percent (a BigInt, rounded down), or null when whole <= 0. */
export function perMille(part, whole) {
  if (whole <= 0n) return null;
  const p = part < 0n ? 0n : part;
  return (p * 1000n) / whole;
}

/** Tenths of a percent as text: 453n -> "45.3". */
export function perMilleText(pm) {
  return `${pm / 10n}.${pm % 10n}`;
}

/** An integer count with thousands grouped. */
export function formatCount(n) {
  return group(String(n));
}
