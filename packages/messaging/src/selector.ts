/**
 * JMS-style message selectors (JMS 2.0 §3.8.1.1): an SQL-92 conditional expression over message
 * headers, e.g. `pool = 'i04' AND sourceHost LIKE 'beamline%'`.
 *
 * A hand-written tokenizer and recursive-descent parser build a small AST once; `matches` walks it.
 * Nothing is ever evaluated as code (no `eval`, no `Function`, no regular expression built from the
 * selector), so a selector from a worker's configuration cannot run anything or hang the router.
 *
 * Grammar (keywords case-insensitive, header names case-sensitive):
 * ```
 * selector       := <empty> | or EOF
 * or             := and ( OR and )*
 * and            := not ( AND not )*
 * not            := NOT not | predicate
 * predicate      := sum [ ( '=' | '<>' | '<' | '>' | '<=' | '>=' ) sum
 *                        | [NOT] BETWEEN sum AND sum
 *                        | [NOT] IN '(' string ( ',' string )* ')'     -- left side: a header name
 *                        | [NOT] LIKE string [ ESCAPE string ]         -- left side: a header name
 *                        | IS [NOT] NULL ]                             -- left side: a header name
 * sum            := product ( ( '+' | '-' ) product )*
 * product        := unary ( ( '*' | '/' ) unary )*
 * unary          := ( '+' | '-' ) unary | primary
 * primary        := string | number | TRUE | FALSE | identifier | '(' or ')'
 * string         := "'" ( any character but "'" | "''" )* "'"
 * number         := digits                                  -- exact
 *                 | digits '.' [digits] [exponent] | '.' digits [exponent] | digits exponent
 * exponent       := ( 'e' | 'E' ) [ '+' | '-' ] digits
 * identifier     := ( letter | '_' | '$' ) ( letter | digit | '_' | '$' )*   -- not a keyword
 * ```
 *
 * Semantics (SQL three-valued logic: TRUE, FALSE, UNKNOWN; a message matches only on TRUE):
 * - A missing header, or one whose value is `null`/`undefined`, is NULL; any comparison, arithmetic,
 *   LIKE, IN or BETWEEN with a NULL operand is UNKNOWN. `IS [NOT] NULL` is never UNKNOWN.
 * - Values compare only with values of the same type (string, number, boolean). Comparing values of
 *   different types is FALSE (JMS: "the value of the operation is false"), also under `NOT IN`,
 *   `NOT LIKE` and `NOT BETWEEN`; a `NOT` in front of a parenthesised comparison flips it as usual.
 * - Strings and booleans compare only with `=` and `<>`; `<`, `>`, `<=`, `>=` on them is FALSE (and
 *   a syntax error when an operand is a literal, where the mistake is visible in the text).
 * - Numbers are IEEE doubles: exact and approximate literals compare with each other as JMS allows,
 *   and `/` is a floating-point division (JMS's Java integer division of two exact values is not
 *   reproduced: header values carry no such distinction). Division by zero is UNKNOWN.
 * - A header used directly as a condition (`urgent AND pool = 'a'`) must hold a boolean; any other
 *   value is UNKNOWN.
 * - An empty selector (only whitespace) selects every message, as in JMS.
 */

/** A header value a selector can read. Other types (objects, buffers) read as NULL. */
export type HeaderValue = string | number | boolean | null | undefined;

export type SelectorHeaders = Readonly<Record<string, HeaderValue>>;

/** A parsed selector. Immutable; safe to share and to call concurrently. */
export interface Selector {
  /** The text it was parsed from. */
  readonly expression: string;
  /** Header names the expression reads, in order of first use, each once. */
  readonly identifiers: readonly string[];
  /** True only when the expression is TRUE for these headers (FALSE and UNKNOWN do not match). */
  matches(headers: SelectorHeaders): boolean;
  /** The three-valued result: `true`, `false`, or `null` for UNKNOWN. */
  evaluate(headers: SelectorHeaders): boolean | null;
}

/** Longest selector accepted, in characters. */
export const MAX_SELECTOR_LENGTH = 4096;
/** Deepest nesting of parentheses, NOT and unary signs accepted. */
export const MAX_SELECTOR_DEPTH = 64;

/**
 * A selector that cannot be parsed. The message names what was expected at `column`, shows the
 * expression with a caret under that column and says how to fix it.
 */
export class SelectorSyntaxError extends Error {
  override readonly name = 'SelectorSyntaxError';
  readonly code = 'MSG_SELECTOR_SYNTAX';
  /** 1-based position in the expression (UTF-16 code units), where the problem is. */
  readonly column: number;
  /** What the parser wanted there, in words ("a value", "')'"). */
  readonly expected: string;
  /** What it found there, in words ("')'", "the end of the selector"). */
  readonly found: string;
  readonly hint: string;
  readonly expression: string;

  constructor(expression: string, column: number, expected: string, found: string, hint: string) {
    super(
      `invalid selector at column ${column}: expected ${expected}, found ${found}\n` +
        `${caret(expression, column)}\nFix: ${hint}`,
    );
    this.column = column;
    this.expected = expected;
    this.found = found;
    this.hint = hint;
    this.expression = expression;
  }
}

/** Parses a selector; throws {@link SelectorSyntaxError} if it is not valid. */
export function parseSelector(expression: string): Selector {
  if (typeof expression !== 'string') {
    throw new TypeError(`a selector is a string, not ${expression === null ? 'null' : typeof expression}`);
  }
  if (expression.length > MAX_SELECTOR_LENGTH) {
    throw new SelectorSyntaxError(
      expression,
      MAX_SELECTOR_LENGTH + 1,
      `at most ${MAX_SELECTOR_LENGTH} characters`,
      `${expression.length} characters`,
      'shorten the selector, e.g. route with the pool header and select on fewer properties',
    );
  }
  const tokens = tokenize(expression);
  const first = tokens[0];
  if (first === undefined || first.kind === 'eof') return new CompiledSelector(expression, null, []);
  const parser = new Parser(expression, tokens);
  const root = parser.parseSelector();
  return new CompiledSelector(expression, root, parser.identifiers());
}

// ---------------------------------------------------------------------------------------------------
// Tokens

type TokenKind = 'ident' | 'keyword' | 'string' | 'number' | 'op' | '(' | ')' | ',' | 'eof';

const KEYWORDS = new Set([
  'NOT',
  'AND',
  'OR',
  'BETWEEN',
  'LIKE',
  'IN',
  'IS',
  'ESCAPE',
  'NULL',
  'TRUE',
  'FALSE',
]);

interface Token {
  readonly kind: TokenKind;
  /** Keywords upper-cased; operators as written; identifiers as written; strings unquoted. */
  readonly text: string;
  /** Numbers only. */
  readonly number?: number;
  /** 1-based column of the first character. */
  readonly col: number;
  /** The source text of the token, for messages. */
  readonly raw: string;
}

const IDENT_START = /[\p{L}\p{Nl}_$]/u;
const IDENT_PART = /[\p{L}\p{Nl}\p{Mn}\p{Mc}\p{Nd}\p{Pc}_$]/u;
const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9';
// JMS: space, horizontal tab, form feed and line terminators.
const isSpace = (c: string): boolean =>
  c === ' ' || c === '\t' || c === '\f' || c === '\n' || c === '\r' || c === '\u2028' || c === '\u2029';

function tokenize(src: string): Token[] {
  const tokens: Token[] = [];
  const fail = (at: number, expected: string, found: string, hint: string): never => {
    throw new SelectorSyntaxError(src, at + 1, expected, found, hint);
  };
  let i = 0;
  while (i < src.length) {
    const c = src[i] as string;
    if (isSpace(c)) {
      i++;
      continue;
    }
    const start = i;
    const col = i + 1;
    if (c === "'") {
      let text = '';
      i++;
      for (;;) {
        if (i >= src.length) {
          fail(
            start,
            "a closing ' for the string that starts here",
            'the end of the selector',
            "close the string with '; write '' for a quote inside a string, as in 'O''Brien'",
          );
        }
        const d = src[i] as string;
        if (d === "'") {
          if (src[i + 1] === "'") {
            text += "'";
            i += 2;
            continue;
          }
          i++;
          break;
        }
        text += d;
        i++;
      }
      tokens.push({ kind: 'string', text, col, raw: src.slice(start, i) });
      continue;
    }
    if (isDigit(c) || (c === '.' && isDigit(src[i + 1]))) {
      let approximate = false;
      while (isDigit(src[i])) i++;
      if (src[i] === '.') {
        approximate = true;
        i++;
        while (isDigit(src[i])) i++;
      }
      if (src[i] === 'e' || src[i] === 'E') {
        const mark = i;
        i++;
        if (src[i] === '+' || src[i] === '-') i++;
        if (!isDigit(src[i])) {
          fail(
            mark,
            'an exponent with digits, as in 1E3 or 2.5e-4',
            quote(src.slice(start, i + 1)),
            'write the exponent as digits after E, or separate a header name from the number with a space',
          );
        }
        approximate = true;
        while (isDigit(src[i])) i++;
      }
      const next = src[i];
      if (next !== undefined && (IDENT_PART.test(next) || next === '.')) {
        let end = i;
        while (end < src.length && (IDENT_PART.test(src[end] as string) || src[end] === '.')) end++;
        fail(
          start,
          'a number',
          quote(src.slice(start, end)),
          'numbers are digits with an optional fraction and exponent (57, 7.5, 7E3) without suffixes; ' +
            'a header name must start with a letter, _ or $',
        );
      }
      const raw = src.slice(start, i);
      const value = Number(raw);
      if (!approximate && !Number.isSafeInteger(value)) {
        fail(
          start,
          `an integer between -${Number.MAX_SAFE_INTEGER} and ${Number.MAX_SAFE_INTEGER}`,
          raw,
          'integers beyond 2^53 cannot be compared exactly; write it as an approximate number such as 1E19',
        );
      }
      if (!Number.isFinite(value)) {
        fail(start, 'a finite number', raw, 'use a number within the range of a double (about 1.8E308)');
      }
      tokens.push({ kind: 'number', text: raw, number: value, col, raw });
      continue;
    }
    if (IDENT_START.test(c)) {
      while (i < src.length && IDENT_PART.test(src[i] as string)) i++;
      const raw = src.slice(start, i);
      const upper = raw.toUpperCase();
      if (KEYWORDS.has(upper)) tokens.push({ kind: 'keyword', text: upper, col, raw });
      else tokens.push({ kind: 'ident', text: raw, col, raw });
      continue;
    }
    const two = src.slice(i, i + 2);
    if (two === '<>' || two === '<=' || two === '>=') {
      tokens.push({ kind: 'op', text: two, col, raw: two });
      i += 2;
      continue;
    }
    if (two === '==') {
      fail(start, 'an operator', "'=='", "compare with a single '=', as in pool = 'i04'");
    }
    if (two === '!=') fail(start, 'an operator', "'!='", "write 'not equal' as <>, as in pool <> 'i04'");
    if (two === '&&') fail(start, 'an operator', "'&&'", 'write AND');
    if (two === '||') fail(start, 'an operator', "'||'", 'write OR');
    if ('=<>+-*/'.includes(c)) {
      tokens.push({ kind: 'op', text: c, col, raw: c });
      i++;
      continue;
    }
    if (c === '(' || c === ')' || c === ',') {
      tokens.push({ kind: c, text: c, col, raw: c });
      i++;
      continue;
    }
    if (c === '"') {
      fail(
        start,
        "a header name, a 'string', a number or an operator",
        "'\"'",
        "strings are in single quotes ('i04'); header names need no quotes",
      );
    }
    if (c === '!') fail(start, 'an operator', "'!'", 'write NOT for negation and <> for not equal');
    const cp = String.fromCodePoint(src.codePointAt(i) as number);
    fail(
      start,
      "a header name, a 'string', a number, an operator or a parenthesis",
      describeChar(cp),
      'remove the character or put it inside a quoted string',
    );
  }
  tokens.push({ kind: 'eof', text: '', col: src.length + 1, raw: '' });
  return tokens;
}

function describeChar(c: string): string {
  const code = c.codePointAt(0) as number;
  const hex = `U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
  return code < 0x20 || code === 0x7f ? `the control character ${hex}` : `'${c}' (${hex})`;
}

function quote(s: string): string {
  return `'${s}'`;
}

// ---------------------------------------------------------------------------------------------------
// AST

/** Static type of a node, known at parse time; `any` for a header (its type is known only at run time). */
type StaticType = 'boolean' | 'number' | 'string' | 'any';

type CompareOp = '=' | '<>' | '<' | '>' | '<=' | '>=';
type ArithOp = '+' | '-' | '*' | '/';

type Node =
  | { readonly kind: 'literal'; readonly value: string | number | boolean | null }
  | { readonly kind: 'ident'; readonly name: string }
  | { readonly kind: 'and' | 'or'; readonly operands: readonly Node[] }
  | { readonly kind: 'not'; readonly operand: Node }
  | { readonly kind: 'neg'; readonly operand: Node }
  | { readonly kind: 'arith'; readonly op: ArithOp; readonly left: Node; readonly right: Node }
  | { readonly kind: 'compare'; readonly op: CompareOp; readonly left: Node; readonly right: Node }
  | {
      readonly kind: 'between';
      readonly negated: boolean;
      readonly value: Node;
      readonly low: Node;
      readonly high: Node;
    }
  | {
      readonly kind: 'in';
      readonly negated: boolean;
      readonly name: string;
      readonly list: readonly string[];
    }
  | {
      readonly kind: 'like';
      readonly negated: boolean;
      readonly name: string;
      readonly pattern: readonly PatternPart[];
    }
  | { readonly kind: 'isNull'; readonly negated: boolean; readonly name: string };

/** A compiled LIKE pattern: a literal code point, `_` (one character) or `%` (any run). */
type PatternPart = { readonly kind: 'char'; readonly char: string } | { readonly kind: 'one' | 'any' };

interface Typed {
  readonly node: Node;
  readonly type: StaticType;
  /** Column where the expression starts, for messages about it. */
  readonly col: number;
  /** Its text, for messages. */
  readonly text: string;
}

const VALUE_WORDS = "a value: a 'string', a number, TRUE, FALSE, a header name or '('";
const CONDITION_WORDS = "a condition such as pool = 'i04', a boolean header, TRUE or FALSE";

class Parser {
  private pos = 0;
  private depth = 0;
  private parens = 0;
  private readonly names: string[] = [];
  private readonly seen = new Set<string>();

  constructor(
    private readonly src: string,
    private readonly tokens: readonly Token[],
  ) {}

  identifiers(): string[] {
    return this.names;
  }

  parseSelector(): Node {
    const expr = this.parseOr();
    const t = this.peek();
    if (t.kind !== 'eof') this.failAfterExpression(expr, t);
    this.expectCondition(expr);
    return expr.node;
  }

  // --- helpers --------------------------------------------------------------------------------------

  private peek(): Token {
    return this.tokens[this.pos] as Token;
  }

  private next(): Token {
    const t = this.tokens[this.pos] as Token;
    if (t.kind !== 'eof') this.pos++;
    return t;
  }

  private isKeyword(t: Token, word: string): boolean {
    return t.kind === 'keyword' && t.text === word;
  }

  private fail(at: Token | number, expected: string, hint: string, found?: string): never {
    const col = typeof at === 'number' ? at : at.col;
    const what = found ?? (typeof at === 'number' ? describeAt(this.src, col) : describeToken(at));
    throw new SelectorSyntaxError(this.src, col, expected, what, hint);
  }

  private enter(t: Token): void {
    if (++this.depth > MAX_SELECTOR_DEPTH) {
      this.fail(
        t,
        `at most ${MAX_SELECTOR_DEPTH} levels of nesting`,
        'remove redundant parentheses, NOTs or signs, or split the condition',
        `level ${this.depth}`,
      );
    }
  }

  private leave(): void {
    this.depth--;
  }

  private textOf(startCol: number): string {
    const end = this.tokens[this.pos - 1];
    const endCol = end ? end.col + end.raw.length : startCol;
    return this.src.slice(startCol - 1, endCol - 1);
  }

  private typed(node: Node, type: StaticType, col: number): Typed {
    return { node, type, col, text: this.textOf(col) };
  }

  private expectCondition(e: Typed): void {
    if (e.type === 'boolean' || e.type === 'any') return;
    this.fail(
      e.col,
      CONDITION_WORDS,
      `compare the ${e.type} with something, as in ${e.text} = ...`,
      `the ${e.type} ${abbreviate(e.text)}`,
    );
  }

  private expectNumeric(e: Typed, context: string): void {
    if (e.type === 'number' || e.type === 'any') return;
    this.fail(
      e.col,
      `a number or a header name ${context}`,
      e.type === 'string'
        ? 'arithmetic and BETWEEN work on numbers; compare strings with =, <>, LIKE or IN'
        : 'arithmetic and BETWEEN work on numbers; put a comparison inside parentheses to combine it with AND/OR',
      `the ${e.type} ${abbreviate(e.text)}`,
    );
  }

  private requireIdentifier(e: Typed, keyword: string): string {
    if (e.node.kind === 'ident') return e.node.name;
    return this.fail(
      e.col,
      `a header name before ${keyword}`,
      `${keyword} tests a header, as in ${keyword === 'IS' ? 'pool IS NULL' : keyword === 'IN' ? "pool IN ('a', 'b')" : "host LIKE 'beamline%'"}`,
      abbreviate(e.text),
    );
  }

  private use(name: string): void {
    if (!this.seen.has(name)) {
      this.seen.add(name);
      this.names.push(name);
    }
  }

  /** The expression is complete but more follows: say what could have come next. */
  private failAfterExpression(e: Typed, t: Token): never {
    const close = this.parens > 0 ? ", ')'" : '';
    if (e.node.kind === 'ident' || e.node.kind === 'literal' || e.node.kind === 'arith') {
      this.fail(
        t,
        `an operator (=, <>, <, >, <=, >=, LIKE, IN, BETWEEN, IS, AND, OR${close}) after ${abbreviate(e.text)}`,
        t.kind === 'string' || t.kind === 'number' || t.kind === 'ident'
          ? `put an operator between ${abbreviate(e.text)} and ${t.raw}, as in ${abbreviate(e.text)} = ${t.raw}`
          : 'complete the condition or remove what follows it',
      );
    }
    this.fail(
      t,
      this.parens > 0 ? "AND, OR or ')'" : 'AND, OR or the end of the selector',
      t.kind === ')'
        ? "remove the extra ')' or add the '(' it closes"
        : t.kind === 'op' && e.node.kind === 'compare'
          ? 'comparisons do not chain: write a = 1 AND b = 1, or parenthesise one side'
          : 'join conditions with AND or OR',
    );
  }

  // --- grammar --------------------------------------------------------------------------------------

  private parseOr(): Typed {
    const first = this.parseAnd();
    if (!this.isKeyword(this.peek(), 'OR')) return first;
    this.expectCondition(first);
    const operands = [first.node];
    while (this.isKeyword(this.peek(), 'OR')) {
      this.next();
      const e = this.parseAnd();
      this.expectCondition(e);
      operands.push(e.node);
    }
    return this.typed({ kind: 'or', operands }, 'boolean', first.col);
  }

  private parseAnd(): Typed {
    const first = this.parseNot();
    if (!this.isKeyword(this.peek(), 'AND')) return first;
    this.expectCondition(first);
    const operands = [first.node];
    while (this.isKeyword(this.peek(), 'AND')) {
      this.next();
      const e = this.parseNot();
      this.expectCondition(e);
      operands.push(e.node);
    }
    return this.typed({ kind: 'and', operands }, 'boolean', first.col);
  }

  private parseNot(): Typed {
    const t = this.peek();
    if (!this.isKeyword(t, 'NOT')) return this.parsePredicate();
    this.next();
    this.enter(t);
    const operand = this.parseNot();
    this.leave();
    this.expectCondition(operand);
    return this.typed({ kind: 'not', operand: operand.node }, 'boolean', t.col);
  }

  private parsePredicate(): Typed {
    const left = this.parseSum();
    const t = this.peek();
    if (t.kind === 'op' && isCompareOp(t.text)) {
      this.next();
      const right = this.parseSum();
      const op = t.text;
      if (op !== '=' && op !== '<>') {
        for (const side of [left, right]) {
          if (side.type === 'string' || side.type === 'boolean') {
            this.fail(
              side.col,
              `a number or a header name on each side of ${op}`,
              `${side.type}s compare only with = and <>; use LIKE or IN for strings`,
              `the ${side.type} ${abbreviate(side.text)}`,
            );
          }
        }
      }
      return this.typed({ kind: 'compare', op, left: left.node, right: right.node }, 'boolean', left.col);
    }
    let negated = false;
    let keyword = t;
    if (this.isKeyword(t, 'NOT')) {
      const after = this.tokens[this.pos + 1] as Token;
      if (
        after.kind === 'keyword' &&
        (after.text === 'BETWEEN' || after.text === 'IN' || after.text === 'LIKE')
      ) {
        this.next();
        negated = true;
        keyword = after;
      } else {
        this.fail(
          after,
          `BETWEEN, IN or LIKE after NOT`,
          `NOT here must be followed by BETWEEN, IN or LIKE; to negate a whole condition put NOT in front of it, as in NOT (${abbreviate(left.text)} = ...)`,
        );
      }
    }
    if (keyword.kind !== 'keyword') return left;
    switch (keyword.text) {
      case 'BETWEEN': {
        this.next();
        this.expectNumeric(left, 'before BETWEEN');
        const low = this.parseSum();
        this.expectNumeric(low, 'after BETWEEN');
        const and = this.peek();
        if (!this.isKeyword(and, 'AND')) {
          this.fail(
            and,
            `AND after BETWEEN ${abbreviate(low.text)}`,
            'write BETWEEN low AND high, as in size BETWEEN 1 AND 10',
          );
        }
        this.next();
        const high = this.parseSum();
        this.expectNumeric(high, 'after BETWEEN ... AND');
        return this.typed(
          { kind: 'between', negated, value: left.node, low: low.node, high: high.node },
          'boolean',
          left.col,
        );
      }
      case 'IN': {
        this.next();
        const name = this.requireIdentifier(left, 'IN');
        const open = this.next();
        if (open.kind !== '(') {
          this.fail(open, "'(' after IN", "list the strings in parentheses, as in pool IN ('a', 'b')");
        }
        const list: string[] = [];
        for (;;) {
          const item = this.next();
          if (item.kind !== 'string') {
            this.fail(
              item,
              list.length === 0 ? "a 'string' (IN lists are not empty)" : "a 'string'",
              "IN takes a list of quoted strings, as in pool IN ('a', 'b')",
            );
          }
          list.push(item.text);
          const sep = this.next();
          if (sep.kind === ')') break;
          if (sep.kind !== ',') {
            this.fail(
              sep,
              "',' or ')' in the IN list",
              "separate the strings with commas and close the list with ')'",
            );
          }
        }
        return this.typed({ kind: 'in', negated, name, list }, 'boolean', left.col);
      }
      case 'LIKE': {
        this.next();
        const name = this.requireIdentifier(left, 'LIKE');
        const pattern = this.next();
        if (pattern.kind !== 'string') {
          this.fail(
            pattern,
            "a 'pattern' string after LIKE",
            "write the pattern as a quoted string: % matches any run of characters, _ one character, as in host LIKE 'beamline%'",
          );
        }
        let escapeChar: string | undefined;
        if (this.isKeyword(this.peek(), 'ESCAPE')) {
          this.next();
          const e = this.next();
          if (e.kind !== 'string' || [...e.text].length !== 1) {
            this.fail(
              e,
              "a one-character 'string' after ESCAPE",
              "name one escape character, as in name LIKE 'a\\_%' ESCAPE '\\'",
            );
          }
          escapeChar = e.text;
        }
        const parts = compilePattern(this.src, pattern, escapeChar);
        return this.typed({ kind: 'like', negated, name, pattern: parts }, 'boolean', left.col);
      }
      case 'IS': {
        this.next();
        const name = this.requireIdentifier(left, 'IS');
        let isNot = false;
        if (this.isKeyword(this.peek(), 'NOT')) {
          this.next();
          isNot = true;
        }
        const nul = this.next();
        if (!this.isKeyword(nul, 'NULL')) {
          this.fail(
            nul,
            isNot ? 'NULL after IS NOT' : 'NULL or NOT NULL after IS',
            'IS only tests for NULL: write pool IS NULL or pool IS NOT NULL',
          );
        }
        return this.typed({ kind: 'isNull', negated: isNot, name }, 'boolean', left.col);
      }
      default:
        return left;
    }
  }

  private parseSum(): Typed {
    let left = this.parseProduct();
    for (;;) {
      const t = this.peek();
      if (t.kind !== 'op' || (t.text !== '+' && t.text !== '-')) return left;
      this.next();
      this.expectNumeric(left, `before ${t.text}`);
      const right = this.parseProduct();
      this.expectNumeric(right, `after ${t.text}`);
      left = this.typed(
        { kind: 'arith', op: t.text, left: left.node, right: right.node },
        'number',
        left.col,
      );
    }
  }

  private parseProduct(): Typed {
    let left = this.parseUnary();
    for (;;) {
      const t = this.peek();
      if (t.kind !== 'op' || (t.text !== '*' && t.text !== '/')) return left;
      this.next();
      this.expectNumeric(left, `before ${t.text}`);
      const right = this.parseUnary();
      this.expectNumeric(right, `after ${t.text}`);
      left = this.typed(
        { kind: 'arith', op: t.text, left: left.node, right: right.node },
        'number',
        left.col,
      );
    }
  }

  private parseUnary(): Typed {
    const t = this.peek();
    if (t.kind === 'op' && (t.text === '+' || t.text === '-')) {
      this.next();
      this.enter(t);
      const operand = this.parseUnary();
      this.leave();
      this.expectNumeric(operand, `after the sign ${t.text}`);
      // Fold signed literals so that -5 is a number literal, as JMS writes them.
      if (operand.node.kind === 'literal' && typeof operand.node.value === 'number') {
        const value = t.text === '-' ? -operand.node.value : operand.node.value;
        return this.typed({ kind: 'literal', value }, 'number', t.col);
      }
      const node: Node = t.text === '-' ? { kind: 'neg', operand: operand.node } : operand.node;
      return this.typed(node, operand.type === 'any' ? 'any' : 'number', t.col);
    }
    return this.parsePrimary();
  }

  private parsePrimary(): Typed {
    const t = this.next();
    switch (t.kind) {
      case 'string':
        return this.typed({ kind: 'literal', value: t.text }, 'string', t.col);
      case 'number':
        return this.typed({ kind: 'literal', value: t.number as number }, 'number', t.col);
      case 'ident':
        this.use(t.text);
        return this.typed({ kind: 'ident', name: t.text }, 'any', t.col);
      case 'keyword':
        if (t.text === 'TRUE' || t.text === 'FALSE') {
          return this.typed({ kind: 'literal', value: t.text === 'TRUE' }, 'boolean', t.col);
        }
        if (t.text === 'NULL') {
          this.fail(
            t,
            VALUE_WORDS,
            'nothing equals NULL in SQL; test for it with IS NULL, as in pool IS NULL',
          );
        }
        return this.fail(
          t,
          VALUE_WORDS,
          `${t.text} is a keyword; a header with that name cannot be used in a selector`,
        );
      case '(': {
        this.enter(t);
        this.parens++;
        const inner = this.parseOr();
        const close = this.next();
        if (close.kind !== ')') {
          if (close.kind === 'eof') {
            this.fail(close, "')'", `close the parenthesis opened at column ${t.col}`);
          }
          this.pos--;
          this.failAfterExpression(inner, close);
        }
        this.parens--;
        this.leave();
        return this.typed(inner.node, inner.type, t.col);
      }
      case 'eof':
        return this.fail(t, VALUE_WORDS, 'complete the expression');
      default:
        return this.fail(
          t,
          VALUE_WORDS,
          t.kind === ')'
            ? 'remove the extra parenthesis, or put a value before it'
            : 'put a value before the operator',
        );
    }
  }
}

function isCompareOp(s: string): s is CompareOp {
  return s === '=' || s === '<>' || s === '<' || s === '>' || s === '<=' || s === '>=';
}

function describeToken(t: Token): string {
  switch (t.kind) {
    case 'eof':
      return 'the end of the selector';
    case 'string':
      return `the string ${abbreviate(t.raw)}`;
    case 'number':
      return `the number ${t.raw}`;
    case 'ident':
      return `the header name ${abbreviate(t.raw)}`;
    case 'keyword':
      return t.raw;
    default:
      return `'${t.raw}'`;
  }
}

function describeAt(src: string, col: number): string {
  return col > src.length ? 'the end of the selector' : `'${src[col - 1]}'`;
}

function abbreviate(s: string): string {
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

/**
 * The line of the expression holding `column` with a caret under it. Long lines are cut to a window
 * around the column; tabs and other control characters print as spaces so that the caret lines up.
 */
function caret(src: string, column: number): string {
  const index = Math.min(column - 1, src.length);
  const lineStart = Math.max(src.lastIndexOf('\n', index - 1), src.lastIndexOf('\r', index - 1)) + 1;
  let lineEnd = src.length;
  for (let k = index; k < src.length; k++) {
    if (src[k] === '\n' || src[k] === '\r') {
      lineEnd = k;
      break;
    }
  }
  let from = lineStart;
  let to = lineEnd;
  const window = 70;
  let prefix = '';
  let suffix = '';
  if (index - from > window) {
    from = index - window + 10;
    prefix = '...';
  }
  if (to - from > window + 20) {
    to = from + window + 20;
    suffix = '...';
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is replaced
  const line = src.slice(from, to).replace(/[\u0000-\u001f\u007f]/g, ' ');
  return `  ${prefix}${line}${suffix}\n  ${' '.repeat(prefix.length + index - from)}^`;
}

/** Turns a LIKE pattern into parts, so matching never goes through a regular expression. */
function compilePattern(src: string, token: Token, escapeChar: string | undefined): PatternPart[] {
  const parts: PatternPart[] = [];
  const chars = [...token.text];
  for (let k = 0; k < chars.length; k++) {
    const ch = chars[k] as string;
    if (escapeChar !== undefined && ch === escapeChar) {
      const nextCh = chars[k + 1];
      if (nextCh !== '%' && nextCh !== '_' && nextCh !== escapeChar) {
        // Point at the escape character itself inside the quoted pattern.
        const col = escapeColumn(token, chars, k);
        throw new SelectorSyntaxError(
          src,
          col,
          `%, _ or ${escapeChar} after the escape character ${escapeChar}`,
          nextCh === undefined ? 'the end of the pattern' : `'${nextCh}'`,
          `the escape character only makes the next %, _ or ${escapeChar} literal; write ${escapeChar}${escapeChar} for the escape character itself`,
        );
      }
      parts.push({ kind: 'char', char: nextCh });
      k++;
    } else if (ch === '%') {
      // Runs of % are one %.
      if (parts[parts.length - 1]?.kind !== 'any') parts.push({ kind: 'any' });
    } else if (ch === '_') {
      parts.push({ kind: 'one' });
    } else {
      parts.push({ kind: 'char', char: ch });
    }
  }
  return parts;
}

/** Column of the k-th code point of a string token's value in the source (accounting for '' pairs). */
function escapeColumn(token: Token, chars: readonly string[], k: number): number {
  let offset = 1; // opening quote
  for (let j = 0; j < k; j++) {
    const ch = chars[j] as string;
    offset += ch === "'" ? 2 : ch.length;
  }
  return token.col + offset;
}

// ---------------------------------------------------------------------------------------------------
// Evaluation

type Value = string | number | boolean | null;

class CompiledSelector implements Selector {
  constructor(
    readonly expression: string,
    private readonly root: Node | null,
    readonly identifiers: readonly string[],
  ) {
    Object.freeze(this.identifiers);
  }

  matches(headers: SelectorHeaders): boolean {
    return this.evaluate(headers) === true;
  }

  evaluate(headers: SelectorHeaders): boolean | null {
    if (this.root === null) return true;
    const v = evaluate(this.root, headers);
    return typeof v === 'boolean' ? v : null;
  }
}

function read(headers: SelectorHeaders, name: string): Value {
  // Own properties only: `constructor`, `__proto__` or `toString` are header names like any other,
  // never Object.prototype members.
  if (!Object.hasOwn(headers, name)) return null;
  const v: unknown = headers[name];
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return v;
    case 'number':
      return Number.isNaN(v) ? null : v;
    case 'bigint':
      // AMQP long-long headers may arrive as bigint.
      return Number(v);
    default:
      return null;
  }
}

function evaluate(node: Node, headers: SelectorHeaders): Value {
  switch (node.kind) {
    case 'literal':
      return node.value;
    case 'ident':
      return read(headers, node.name);
    case 'and': {
      let unknown = false;
      for (const operand of node.operands) {
        const v = evaluate(operand, headers);
        if (v === false) return false;
        if (v !== true) unknown = true;
      }
      return unknown ? null : true;
    }
    case 'or': {
      let unknown = false;
      for (const operand of node.operands) {
        const v = evaluate(operand, headers);
        if (v === true) return true;
        if (v !== false) unknown = true;
      }
      return unknown ? null : false;
    }
    case 'not': {
      const v = evaluate(node.operand, headers);
      return typeof v === 'boolean' ? !v : null;
    }
    case 'neg': {
      const v = evaluate(node.operand, headers);
      return typeof v === 'number' ? -v : null;
    }
    case 'arith': {
      const a = evaluate(node.left, headers);
      const b = evaluate(node.right, headers);
      if (typeof a !== 'number' || typeof b !== 'number') return null;
      switch (node.op) {
        case '+':
          return a + b;
        case '-':
          return a - b;
        case '*':
          return a * b;
        case '/':
          return b === 0 ? null : a / b;
      }
      return null;
    }
    case 'compare':
      return compare(node.op, evaluate(node.left, headers), evaluate(node.right, headers));
    case 'between': {
      const v = evaluate(node.value, headers);
      const low = evaluate(node.low, headers);
      const high = evaluate(node.high, headers);
      // JMS defines these as `low <= v AND v <= high` and `v < low OR v > high`.
      if (node.negated) return or3(compare('<', v, low), compare('>', v, high));
      return and3(compare('>=', v, low), compare('<=', v, high));
    }
    case 'in': {
      const v = read(headers, node.name);
      if (v === null) return null;
      if (typeof v !== 'string') return false;
      return node.list.includes(v) !== node.negated;
    }
    case 'like': {
      const v = read(headers, node.name);
      if (v === null) return null;
      if (typeof v !== 'string') return false;
      return likeMatches(node.pattern, [...v]) !== node.negated;
    }
    case 'isNull':
      return (read(headers, node.name) === null) !== node.negated;
  }
}

function compare(op: CompareOp, a: Value, b: Value): boolean | null {
  if (a === null || b === null) return null;
  if (typeof a !== typeof b) return false;
  if (op === '=') return a === b;
  if (op === '<>') return a !== b;
  if (typeof a !== 'number' || typeof b !== 'number') return false;
  switch (op) {
    case '<':
      return a < b;
    case '>':
      return a > b;
    case '<=':
      return a <= b;
    case '>=':
      return a >= b;
  }
}

function and3(a: boolean | null, b: boolean | null): boolean | null {
  if (a === false || b === false) return false;
  return a === null || b === null ? null : true;
}

function or3(a: boolean | null, b: boolean | null): boolean | null {
  if (a === true || b === true) return true;
  return a === null || b === null ? null : false;
}

/**
 * Wildcard matching in O(pattern × text) at worst: on a mismatch, go back to the last `%` and let it
 * take one more character. Only the last `%` needs revisiting, because any earlier one could only
 * re-create a position the last one already tries.
 */
function likeMatches(pattern: readonly PatternPart[], text: readonly string[]): boolean {
  let p = 0;
  let t = 0;
  let starP = -1;
  let starT = 0;
  while (t < text.length) {
    const part = pattern[p];
    if (part !== undefined && (part.kind === 'one' || (part.kind === 'char' && part.char === text[t]))) {
      p++;
      t++;
    } else if (part !== undefined && part.kind === 'any') {
      starP = p++;
      starT = t;
    } else if (starP >= 0) {
      p = starP + 1;
      t = ++starT;
    } else {
      return false;
    }
  }
  while (pattern[p]?.kind === 'any') p++;
  return p === pattern.length;
}
