import { describe, expect, it } from 'vitest';
import {
  MAX_SELECTOR_DEPTH,
  MAX_SELECTOR_LENGTH,
  parseSelector,
  type SelectorHeaders,
  SelectorSyntaxError,
} from '../src/selector.js';

/** The three-valued result: true, false or null (UNKNOWN). */
const ev = (expr: string, headers: SelectorHeaders = {}): boolean | null =>
  parseSelector(expr).evaluate(headers);

const H: SelectorHeaders = {
  pool: 'i04',
  host: 'beamline7.diamond.ac.uk',
  size: 10,
  ratio: 2.5,
  urgent: true,
  quiet: false,
  none: null,
  nothing: undefined,
};

function syntaxError(expr: string): SelectorSyntaxError {
  try {
    parseSelector(expr);
  } catch (err) {
    if (err instanceof SelectorSyntaxError) return err;
    throw err;
  }
  throw new Error(`expected a syntax error for ${expr}`);
}

describe('matching', () => {
  it('matches only when the result is TRUE', () => {
    const s = parseSelector("pool = 'i04' AND host LIKE 'beamline%'");
    expect(s.matches(H)).toBe(true);
    expect(s.matches({ ...H, pool: 'i05' })).toBe(false);
    expect(s.matches({ host: 'beamline1' })).toBe(false); // UNKNOWN
    expect(s.evaluate({ host: 'beamline1' })).toBeNull();
    expect(s.expression).toBe("pool = 'i04' AND host LIKE 'beamline%'");
    expect(s.identifiers).toEqual(['pool', 'host']);
  });

  it('lists each identifier once, in order of first use', () => {
    expect(parseSelector("b = 1 OR a = 2 OR b IS NULL OR c IN ('x')").identifiers).toEqual(['b', 'a', 'c']);
    expect(parseSelector('TRUE').identifiers).toEqual([]);
  });

  it('selects everything with an empty selector (JMS)', () => {
    expect(parseSelector('').matches({})).toBe(true);
    expect(parseSelector(' \t\n').matches(H)).toBe(true);
  });

  it('has case-insensitive keywords and case-sensitive identifiers', () => {
    expect(ev("pool = 'i04' and NOT (size between 1 AnD 5) oR false", H)).toBe(true);
    expect(ev("Pool = 'i04'", H)).toBeNull();
    expect(ev('urgent = true', H)).toBe(true);
  });
});

describe('literals', () => {
  it('reads strings with doubled quotes, keeping case and spaces', () => {
    expect(ev("name = 'O''Brien'", { name: "O'Brien" })).toBe(true);
    expect(ev("name = ''''", { name: "'" })).toBe(true);
    expect(ev("name = ''", { name: '' })).toBe(true);
    expect(ev("name = ' A b '", { name: ' A b ' })).toBe(true);
    expect(ev("name = 'a b'", { name: 'A B' })).toBe(false);
  });

  it('reads exact and approximate numbers, which compare with each other', () => {
    expect(ev('size = 10', H)).toBe(true);
    expect(ev('size = 10.0', H)).toBe(true);
    expect(ev('size = 1E1', H)).toBe(true);
    expect(ev('size = 1e+1', H)).toBe(true);
    expect(ev('size = 100e-1', H)).toBe(true);
    expect(ev('ratio = 2.5', H)).toBe(true);
    expect(ev('ratio = .25E1', H)).toBe(true);
    expect(ev('ratio = 25e-1', H)).toBe(true);
    expect(ev('size = 10.', H)).toBe(true);
    expect(ev('n = -957', { n: -957 })).toBe(true);
    expect(ev('n = +62', { n: 62 })).toBe(true);
    expect(ev('n = -57.9E2', { n: -5790 })).toBe(true);
  });

  it('reads TRUE and FALSE', () => {
    expect(ev('TRUE')).toBe(true);
    expect(ev('FALSE')).toBe(false);
    expect(ev('urgent = TRUE AND quiet = FALSE', H)).toBe(true);
  });
});

describe('comparison operators', () => {
  const cases: [string, boolean | null][] = [
    ['size = 10', true],
    ['size = 11', false],
    ['missing = 10', null],
    ['size <> 11', true],
    ['size <> 10', false],
    ['missing <> 10', null],
    ['size < 11', true],
    ['size < 10', false],
    ['missing < 10', null],
    ['size > 9', true],
    ['size > 10', false],
    ['missing > 1', null],
    ['size <= 10', true],
    ['size <= 9.5', false],
    ['none <= 1', null],
    ['size >= 10', true],
    ['size >= 10.5', false],
    ['nothing >= 1', null],
    ["pool = 'i04'", true],
    ["pool <> 'i04'", false],
    ["pool = 'I04'", false],
    ['urgent = quiet', false],
    ['urgent <> quiet', true],
    ['size = size', true],
    ['none = none', null],
  ];
  it.each(cases)('%s → %s', (expr, expected) => {
    expect(ev(expr, H)).toBe(expected);
  });

  it('is FALSE, not UNKNOWN, when the types differ (JMS: "the value of the operation is false")', () => {
    expect(ev("size = '10'", H)).toBe(false);
    expect(ev("size <> '10'", H)).toBe(false);
    expect(ev('pool = 1', H)).toBe(false);
    expect(ev('urgent = 1', H)).toBe(false);
    expect(ev('NOT (pool = 1)', H)).toBe(true);
    expect(ev('pool < 1', H)).toBe(false);
    expect(ev('pool > size', H)).toBe(false);
    expect(ev('urgent > quiet', H)).toBe(false); // booleans have no order
  });

  it('orders only numbers: string and boolean literals with < > <= >= are refused', () => {
    expect(syntaxError("pool < 'z'").column).toBe(8);
    expect(syntaxError("'a' >= pool").column).toBe(1);
    expect(syntaxError('urgent > FALSE').column).toBe(10);
  });
});

describe('arithmetic', () => {
  const cases: [string, boolean | null][] = [
    ['size + 1 = 11', true],
    ['size - 1 = 9', true],
    ['size * 2 = 20', true],
    ['size / 4 = 2.5', true], // a floating-point division
    ['-size = -10', true],
    ['+size = 10', true],
    ['- -size = 10', true],
    ['ratio * 2 = 5', true],
    ['missing + 1 = 1', null],
    ['size / 0 = 1', null],
    ['size / 0 <> 1', null],
    ['pool + 1 = 1', null], // a string header in arithmetic
    ['-pool = 1', null],
  ];
  it.each(cases)('%s → %s', (expr, expected) => {
    expect(ev(expr, H)).toBe(expected);
  });

  it('follows precedence: unary, then * /, then + -, then comparison', () => {
    expect(ev('2 + 3 * 4 = 14')).toBe(true);
    expect(ev('(2 + 3) * 4 = 20')).toBe(true);
    expect(ev('10 - 4 - 3 = 3')).toBe(true); // left-associative
    expect(ev('12 / 3 / 2 = 2')).toBe(true);
    expect(ev('-2 * 3 = -6')).toBe(true);
    expect(ev('2 * -3 = -6')).toBe(true);
    expect(ev('1 - -1 = 2')).toBe(true);
    expect(ev('size + 1 > 10 AND size * 2 < 21', H)).toBe(true);
  });
});

describe('logical operators (SQL three-valued logic)', () => {
  const T = 'urgent';
  const F = 'quiet';
  const U = 'missing';
  const table: [string, boolean | null][] = [
    [`${T} AND ${T}`, true],
    [`${T} AND ${F}`, false],
    [`${T} AND ${U}`, null],
    [`${F} AND ${U}`, false],
    [`${U} AND ${F}`, false],
    [`${U} AND ${U}`, null],
    [`${T} OR ${F}`, true],
    [`${F} OR ${F}`, false],
    [`${T} OR ${U}`, true],
    [`${U} OR ${T}`, true],
    [`${F} OR ${U}`, null],
    [`${U} OR ${U}`, null],
    [`NOT ${T}`, false],
    [`NOT ${F}`, true],
    [`NOT ${U}`, null],
    [`NOT NOT ${T}`, true],
    ['pool', null], // a header used as a condition must be a boolean
    ['NOT pool', null],
  ];
  it.each(table)('%s → %s', (expr, expected) => {
    expect(ev(expr, H)).toBe(expected);
  });

  it('binds NOT tighter than AND, and AND tighter than OR', () => {
    expect(ev('TRUE OR TRUE AND FALSE')).toBe(true); // TRUE OR (TRUE AND FALSE)
    expect(ev('(TRUE OR TRUE) AND FALSE')).toBe(false);
    expect(ev('NOT FALSE AND FALSE')).toBe(false); // (NOT FALSE) AND FALSE
    expect(ev('NOT (FALSE AND FALSE)')).toBe(true);
    expect(ev('FALSE AND FALSE OR TRUE')).toBe(true);
    expect(ev("NOT pool = 'i05'", H)).toBe(true); // NOT (pool = 'i05')
  });
});

describe('LIKE', () => {
  const cases: [string, SelectorHeaders, boolean | null][] = [
    ["s LIKE 'abc'", { s: 'abc' }, true],
    ["s LIKE 'abc'", { s: 'abcd' }, false],
    ["s LIKE 'ab%'", { s: 'ab' }, true],
    ["s LIKE 'ab%'", { s: 'abcdef' }, true],
    ["s LIKE '%'", { s: '' }, true],
    ["s LIKE '%cd%'", { s: 'abcdef' }, true],
    ["s LIKE '%cd%'", { s: 'abdcef' }, false],
    ["s LIKE 'a_c'", { s: 'abc' }, true],
    ["s LIKE 'a_c'", { s: 'ac' }, false],
    ["s LIKE 'a_c'", { s: 'abbc' }, false],
    ["s LIKE '_'", { s: 'é' }, true],
    ["s LIKE '_'", { s: '😀' }, true], // one character, two UTF-16 units
    ["s LIKE 'a%b%c'", { s: 'aXbYbZc' }, true],
    ["s LIKE 'a%b%c'", { s: 'aXbYbZ' }, false],
    ["s LIKE '%a%%'", { s: 'xxa' }, true],
    ["s LIKE 'ABC'", { s: 'abc' }, false], // case-sensitive
    ["s LIKE 'a%'", { s: 'a\nb' }, true], // % crosses lines
    ["s NOT LIKE 'ab%'", { s: 'abc' }, false],
    ["s NOT LIKE 'ab%'", { s: 'xbc' }, true],
    ["s LIKE 'ab%'", {}, null],
    ["s NOT LIKE 'ab%'", { s: null }, null],
    ["s LIKE '1%'", { s: 10 }, false], // not a string: FALSE, under NOT too
    ["s NOT LIKE '1%'", { s: 10 }, false],
  ];
  it.each(cases)('%s with %j → %s', (expr, headers, expected) => {
    expect(ev(expr, headers)).toBe(expected);
  });

  it('takes regular-expression characters literally', () => {
    expect(ev("s LIKE 'a.c'", { s: 'abc' })).toBe(false);
    expect(ev("s LIKE 'a.c'", { s: 'a.c' })).toBe(true);
    expect(ev("s LIKE 'a*'", { s: 'aaa' })).toBe(false);
    expect(ev("s LIKE 'a*'", { s: 'a*' })).toBe(true);
    expect(ev("s LIKE '(a|b)'", { s: 'a' })).toBe(false);
    expect(ev("s LIKE '(a|b)'", { s: '(a|b)' })).toBe(true);
    expect(ev("s LIKE '^[x]+?$\\d{2}'", { s: '^[x]+?$\\d{2}' })).toBe(true);
    expect(ev("s LIKE '.*'", { s: 'anything' })).toBe(false);
  });

  it('honours ESCAPE for %, _ and the escape character itself', () => {
    expect(ev("s LIKE '100\\%' ESCAPE '\\'", { s: '100%' })).toBe(true);
    expect(ev("s LIKE '100\\%' ESCAPE '\\'", { s: '1000' })).toBe(false);
    expect(ev("s LIKE 'a\\_b' ESCAPE '\\'", { s: 'a_b' })).toBe(true);
    expect(ev("s LIKE 'a\\_b' ESCAPE '\\'", { s: 'axb' })).toBe(false);
    expect(ev("s LIKE 'a\\\\%' ESCAPE '\\'", { s: 'a\\xyz' })).toBe(true);
    expect(ev("s LIKE 'a!%%' ESCAPE '!'", { s: 'a%rest' })).toBe(true);
    expect(ev("s LIKE 'a!%%' ESCAPE '!'", { s: 'ab' })).toBe(false);
    expect(ev("s LIKE 'it''s_%' ESCAPE 's'", { s: "it'_x" })).toBe(true);
  });

  it('rejects a dangling or misplaced escape character, pointing at it', () => {
    // 'a%' ESCAPE '%': the % is the escape and must be followed by %, _ or itself.
    expect(syntaxError("s LIKE 'a%' ESCAPE '%'").column).toBe(10);
    expect(syntaxError("s LIKE 'a\\b' ESCAPE '\\'").column).toBe(10);
    expect(syntaxError("s LIKE 'x''\\b' ESCAPE '\\'").column).toBe(12);
    expect(syntaxError("s LIKE 'a' ESCAPE 'ab'").column).toBe(19);
    expect(syntaxError("s LIKE 'a' ESCAPE ''").column).toBe(19);
  });

  it('matches long texts against many % in time proportional to pattern × text', () => {
    const pattern = `${'%a'.repeat(200)}%b`;
    const text = 'a'.repeat(20_000);
    expect(ev(`s LIKE '${pattern}'`, { s: text })).toBe(false);
    expect(ev(`s LIKE '${pattern}'`, { s: `${text}b` })).toBe(true);
  });
});

describe('IN', () => {
  const cases: [string, SelectorHeaders, boolean | null][] = [
    ["c IN ('UK', 'US', 'France')", { c: 'UK' }, true],
    ["c IN ('UK', 'US', 'France')", { c: 'Peru' }, false],
    ["c IN ('UK')", { c: 'uk' }, false],
    ["c NOT IN ('UK', 'US')", { c: 'UK' }, false],
    ["c NOT IN ('UK', 'US')", { c: 'Peru' }, true],
    ["c IN ('UK')", {}, null],
    ["c NOT IN ('UK')", { c: null }, null],
    ["c IN ('1')", { c: 1 }, false], // not a string
    ["c NOT IN ('1')", { c: 1 }, false],
    ["c IN ('it''s', '')", { c: "it's" }, true],
    ["c IN ('it''s', '')", { c: '' }, true],
  ];
  it.each(cases)('%s with %j → %s', (expr, headers, expected) => {
    expect(ev(expr, headers)).toBe(expected);
  });
});

describe('BETWEEN', () => {
  const cases: [string, SelectorHeaders, boolean | null][] = [
    ['a BETWEEN 15 AND 19', { a: 15 }, true],
    ['a BETWEEN 15 AND 19', { a: 19 }, true],
    ['a BETWEEN 15 AND 19', { a: 17.5 }, true],
    ['a BETWEEN 15 AND 19', { a: 14 }, false],
    ['a BETWEEN 15 AND 19', { a: 20 }, false],
    ['a BETWEEN 19 AND 15', { a: 17 }, false],
    ['a NOT BETWEEN 15 AND 19', { a: 17 }, false],
    ['a NOT BETWEEN 15 AND 19', { a: 14 }, true],
    ['a NOT BETWEEN 15 AND 19', { a: 20 }, true],
    ['a BETWEEN 15 AND 19', {}, null],
    ['a NOT BETWEEN 15 AND 19', {}, null],
    ['a BETWEEN lo AND 19', { a: 17 }, null],
    ['a BETWEEN lo AND 19', { a: 20 }, false], // FALSE AND UNKNOWN
    ['a NOT BETWEEN lo AND 19', { a: 20 }, true], // UNKNOWN OR TRUE
    ['a BETWEEN 15 AND 19', { a: '17' }, false],
    ['a NOT BETWEEN 15 AND 19', { a: '17' }, false],
    ['a BETWEEN 2 * 5 AND 10 + 10 AND TRUE', { a: 15 }, true], // the first AND belongs to BETWEEN
    ['a + 1 BETWEEN -1 AND 1', { a: 0 }, true],
  ];
  it.each(cases)('%s with %j → %s', (expr, headers, expected) => {
    expect(ev(expr, headers)).toBe(expected);
  });
});

describe('NULL', () => {
  const cases: [string, boolean | null][] = [
    ['none IS NULL', true],
    ['nothing IS NULL', true],
    ['missing IS NULL', true],
    ['pool IS NULL', false],
    ['quiet IS NULL', false],
    ['none IS NOT NULL', false],
    ['missing IS NOT NULL', false],
    ['pool IS NOT NULL', true],
    ['size IS NOT NULL', true],
    ['NOT (missing IS NULL)', false],
    ['missing IS NULL OR missing = 1', true],
  ];
  it.each(cases)('%s → %s', (expr, expected) => {
    expect(ev(expr, H)).toBe(expected);
  });

  it('reads a NaN or a non-scalar value as NULL and a bigint as a number', () => {
    const odd = { nan: Number.NaN, obj: {} as unknown as string, big: 5n as unknown as number };
    expect(ev('nan IS NULL', odd)).toBe(true);
    expect(ev('obj IS NULL', odd)).toBe(true);
    expect(ev('big = 5', odd)).toBe(true);
  });
});

describe('syntax errors', () => {
  // [expression, column, a fragment of what was expected]
  const table: [string, number, string][] = [
    ['a =', 4, 'a value'],
    ['= 1', 1, 'a value'],
    ["pool 'i04'", 6, 'an operator'],
    ['(a = 1', 7, "')'"],
    ['a = 1)', 6, 'AND, OR or the end'],
    ['((a = 1) OR b', 14, "')'"],
    ['(a = 1 b = 2)', 8, "AND, OR or ')'"],
    ['a == 1', 3, 'an operator'],
    ['a != 1', 3, 'an operator'],
    ['a = 1 && b = 2', 7, 'an operator'],
    ['a = "x"', 5, "'string'"],
    ["a = 'x", 5, "closing '"],
    ["a = 'it''s", 5, "closing '"],
    ['a = 1 = 2', 7, 'AND, OR'],
    ['a NOT = 1', 7, 'BETWEEN, IN or LIKE'],
    ['a BETWEEN 1', 12, 'AND after BETWEEN'],
    ['a BETWEEN 1 OR 2', 13, 'AND after BETWEEN'],
    ["a BETWEEN 'x' AND 'y'", 11, 'a number'],
    ['a IN', 5, "'('"],
    ['a IN ()', 7, "a 'string'"],
    ['a IN (1, 2)', 7, "a 'string'"],
    ["a IN ('x' 'y')", 11, "',' or ')'"],
    ["a IN ('x',)", 11, "a 'string'"],
    ["a + 1 IN ('x')", 1, 'a header name before IN'],
    ["'x' LIKE 'y'", 1, 'a header name before LIKE'],
    ['a LIKE b', 8, "a 'pattern'"],
    ["a LIKE 'x' ESCAPE", 18, 'one-character'],
    ['a IS 1', 6, 'NULL'],
    ['a IS NOT 1', 10, 'NULL after IS NOT'],
    ['1 IS NULL', 1, 'a header name before IS'],
    ['a = NULL', 5, 'a value'],
    ['AND = 1', 1, 'a value'],
    ['a AND', 6, 'a value'],
    ['a OR OR b', 6, 'a value'],
    ['5', 1, 'a condition'],
    ["'x'", 1, 'a condition'],
    ['a AND 5', 7, 'a condition'],
    ['NOT 5', 5, 'a condition'],
    ['a + 1', 1, 'a condition'],
    ["a + 'x' = 1", 5, 'a number'],
    ['TRUE + 1 = 2', 1, 'a number'],
    ['-(a = 1) = 1', 2, 'a number'],
    ['a = 1e', 6, 'an exponent'],
    ['a = 57L', 5, 'a number'],
    ['a = 1.2.3', 5, 'a number'],
    ['a = 9007199254740993', 5, 'an integer'],
    ['a = 1e999', 5, 'a finite number'],
    ['a = #', 5, 'a header name'],
    ['a.b = 1', 2, 'a header name'],
    ['a = 1 ;', 7, 'a header name'],
  ];
  it.each(table)('%s → column %i', (expr, column, expected) => {
    const err = syntaxError(expr);
    expect(err.column).toBe(column);
    expect(err.expected).toContain(expected);
    expect(err.message).toContain(`column ${column}`);
    expect(err.message).toContain('Fix: ');
    expect(err.expression).toBe(expr);
  });

  it('shows the expression with a caret under the column, and how to fix it', () => {
    const err = syntaxError("pool = 'i04' AND size >");
    expect(err.column).toBe(24);
    expect(err.message).toBe(
      "invalid selector at column 24: expected a value: a 'string', a number, TRUE, FALSE, a header name or '(', found the end of the selector\n" +
        "  pool = 'i04' AND size >\n" +
        `  ${' '.repeat(23)}^\n` +
        'Fix: complete the expression',
    );
    expect(err.name).toBe('SelectorSyntaxError');
    expect(err.code).toBe('MSG_SELECTOR_SYNTAX');
    expect(err).toBeInstanceOf(Error);
  });

  it('puts the caret on the right line of a multi-line selector, and cuts long lines', () => {
    const err = syntaxError("pool = 'i04'\n  AND size >> 3");
    expect(err.column).toBe(26); // the second '>'
    expect(err.message).toContain(`\n    AND size >> 3\n  ${' '.repeat(12)}^\n`);
    const long = `${'a = 1 AND '.repeat(30)}b = = 2`;
    const e2 = syntaxError(long);
    expect(e2.column).toBe(long.length - 2);
    const [, line, mark] = e2.message.split('\n');
    expect(line?.length).toBeLessThan(120);
    expect(line?.[mark?.indexOf('^') ?? -1]).toBe('=');
  });

  it('names the expected AND/OR inside parentheses, and the opening parenthesis when one is missing', () => {
    expect(syntaxError('(a = 1 b = 2)').expected).toBe("AND, OR or ')'");
    expect(syntaxError('(a = 1').message).toContain('opened at column 1');
  });
});

describe('hostile input', () => {
  it('treats constructor, __proto__, toString and hasOwnProperty as plain header names', () => {
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'prototype']) {
      expect(ev(`${name} IS NULL`, {})).toBe(true);
      expect(ev(`${name} IS NOT NULL`, {})).toBe(false);
      expect(ev(`${name} = 'x'`, {})).toBeNull();
      const own = JSON.parse(`{"${name}": "x"}`) as SelectorHeaders;
      expect(ev(`${name} = 'x'`, own)).toBe(true);
      expect(ev(`${name} LIKE '%'`, own)).toBe(true);
      expect(parseSelector(`${name} = 'x'`).identifiers).toEqual([name]);
    }
    expect(ev("constructor = 'x'", Object.create({ constructor: 'x' }) as SelectorHeaders)).toBeNull();
  });

  it('refuses an unterminated string at the opening quote', () => {
    const err = syntaxError("pool = 'i04");
    expect(err.column).toBe(8);
    expect(err.hint).toContain("''");
    expect(syntaxError("'").column).toBe(1);
    expect(syntaxError("a = ''' ").column).toBe(5);
  });

  it('limits nesting to 64 levels of parentheses, NOT or signs, pointing at the 65th', () => {
    const ok = `${'('.repeat(MAX_SELECTOR_DEPTH)}a = 1${')'.repeat(MAX_SELECTOR_DEPTH)}`;
    expect(ev(ok, { a: 1 })).toBe(true);
    const deep = `${'('.repeat(MAX_SELECTOR_DEPTH + 1)}a = 1${')'.repeat(MAX_SELECTOR_DEPTH + 1)}`;
    expect(syntaxError(deep).column).toBe(MAX_SELECTOR_DEPTH + 1);
    expect(syntaxError(`${'NOT '.repeat(1000)}TRUE`).column).toBe(4 * MAX_SELECTOR_DEPTH + 1);
    expect(syntaxError(`a = ${'-'.repeat(1000)}1`).column).toBe(5 + MAX_SELECTOR_DEPTH);
    // Not a stack overflow, whatever the input:
    expect(syntaxError('('.repeat(100_000).slice(0, MAX_SELECTOR_LENGTH)).column).toBe(
      MAX_SELECTOR_DEPTH + 1,
    );
  });

  it('limits the length to 4 KiB', () => {
    const long = `a = '${'x'.repeat(MAX_SELECTOR_LENGTH)}'`;
    const err = syntaxError(long);
    expect(err.column).toBe(MAX_SELECTOR_LENGTH + 1);
    expect(err.expected).toContain('4096');
    const justFits = `a = '${'x'.repeat(MAX_SELECTOR_LENGTH - 6)}'`;
    expect(justFits.length).toBe(MAX_SELECTOR_LENGTH);
    expect(parseSelector(justFits).matches({ a: 'x'.repeat(MAX_SELECTOR_LENGTH - 6) })).toBe(true);
  });

  it('evaluates a long flat chain without deep recursion', () => {
    const chain = Array.from({ length: 250 }, (_, i) => `h${i} = ${i}`).join(' OR ');
    expect(chain.length).toBeLessThan(MAX_SELECTOR_LENGTH);
    expect(ev(chain, { h249: 249 })).toBe(true);
    expect(ev(chain, { h1: 0 })).toBeNull();
  });

  it('refuses control and non-ASCII punctuation characters by name', () => {
    expect(syntaxError('a = 1 \u0000').found).toContain('U+0000');
    expect(syntaxError('a = \u201cx\u201d').found).toContain('U+201C');
  });

  it('accepts Unicode letters, $ and _ in header names', () => {
    expect(ev("données_$1 = 'ok'", { données_$1: 'ok' })).toBe(true);
    expect(ev('_x = 1', { _x: 1 })).toBe(true);
  });

  it('rejects a selector that is not a string', () => {
    expect(() => parseSelector(null as unknown as string)).toThrow(TypeError);
  });
});
