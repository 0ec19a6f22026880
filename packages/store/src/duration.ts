/**
 * ISO 8601 durations (`P7D`, `PT12H`, `P1Y2M`, `P2W`), added to an instant the calendar way: `P1M`
 * after 31 January is the end of February, as `Date` does it in UTC.
 */
const DURATION =
  /^P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:[.,]\d+)?)S)?)?$/;

/** `ms` plus the duration, or undefined if `duration` is not an ISO 8601 duration. */
export function addDuration(ms: number, duration: string): number | undefined {
  const m = DURATION.exec(duration.trim());
  if (!m) return undefined;
  const n = (i: number): number => (m[i] ? Number(m[i]) : 0);
  const d = new Date(ms);
  d.setUTCFullYear(d.getUTCFullYear() + n(1), d.getUTCMonth() + n(2), d.getUTCDate() + 7 * n(3) + n(4));
  const seconds = m[7] ? Number(m[7].replace(',', '.')) : 0;
  const result = d.getTime() + n(5) * 3_600_000 + n(6) * 60_000 + Math.round(seconds * 1000);
  return Number.isFinite(result) ? result : undefined;
}
