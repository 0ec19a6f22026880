/**
 * Positions in JSON text, which `JSON.parse` does not give: where a JSON pointer's value is, and where
 * (and why) text stops being JSON. Used only once something is wrong, so a valid document never pays.
 *
 * `JSON.parse`'s own error messages are not used: V8 quotes a stretch of the text in them, and that
 * stretch may be a password.
 */

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

function skipWs(text: string, i: number): number {
  let j = i;
  while (j < text.length && WS.has(text.charCodeAt(j))) j++;
  return j;
}

/** Offset just past the string starting at `i` (a `"`), or -1 if it does not end. */
function skipString(text: string, i: number): number {
  let j = i + 1;
  while (j < text.length) {
    const c = text.charCodeAt(j);
    if (c === 0x5c /* \ */) j += 2;
    else if (c === 0x22 /* " */) return j + 1;
    else j++;
  }
  return -1;
}

/** Offset just past the value starting at `i`; tolerant, for text JSON.parse has accepted. */
function skipValue(text: string, i: number): number {
  const c = text.charAt(i);
  if (c === '"') return skipString(text, i);
  if (c === '{' || c === '[') {
    let depth = 0;
    let j = i;
    while (j < text.length) {
      const d = text.charAt(j);
      if (d === '"') {
        j = skipString(text, j);
        if (j < 0) return text.length;
        continue;
      }
      if (d === '{' || d === '[') depth++;
      else if (d === '}' || d === ']') {
        depth--;
        if (depth === 0) return j + 1;
      }
      j++;
    }
    return text.length;
  }
  let j = i;
  while (j < text.length && !',]}'.includes(text.charAt(j)) && !WS.has(text.charCodeAt(j))) j++;
  return j;
}

/**
 * Where the value at a JSON pointer (as tokens) is written: the offset of its member name in an
 * object, of the value itself in an array or at the top. As far as the path exists, otherwise the
 * deepest part that does.
 */
export function offsetOfPointer(text: string, tokens: readonly string[]): number {
  let i = skipWs(text, 0);
  let at = i;
  for (const token of tokens) {
    const c = text.charAt(i);
    if (c === '{') {
      let j = skipWs(text, i + 1);
      let found = -1;
      let keyAt = -1;
      while (j < text.length && text.charAt(j) === '"') {
        const end = skipString(text, j);
        if (end < 0) return at;
        let key: unknown;
        try {
          key = JSON.parse(text.slice(j, end));
        } catch {
          return at;
        }
        const colon = skipWs(text, end);
        const value = skipWs(text, colon + 1);
        // JSON.parse keeps the last of duplicate names, so the last match is the one that counts.
        if (key === token) {
          found = value;
          keyAt = j;
        }
        j = skipWs(text, skipValue(text, value));
        if (text.charAt(j) !== ',') break;
        j = skipWs(text, j + 1);
      }
      if (found < 0) return at;
      i = found;
      at = keyAt;
    } else if (c === '[') {
      const index = Number(token);
      if (!Number.isInteger(index) || index < 0) return at;
      let j = skipWs(text, i + 1);
      for (let k = 0; k < index; k++) {
        j = skipWs(text, skipValue(text, j));
        if (text.charAt(j) !== ',') return at;
        j = skipWs(text, j + 1);
      }
      if (text.charAt(j) === ']') return at;
      i = j;
      at = j;
    } else {
      return at;
    }
  }
  return at;
}

export interface JsonSyntaxError {
  readonly offset: number;
  readonly message: string;
}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const VALUE_HINT = 'a string in double quotes, a number, true, false, null, an object or an array';

/**
 * The first place where `text` is not JSON (RFC 8259), with a message that never quotes the text.
 * Iterative, so nesting depth cannot overflow the stack.
 */
export function findJsonSyntaxError(text: string): JsonSyntaxError | undefined {
  const stack: string[] = [];
  let state: 'value' | 'firstValue' | 'key' | 'firstKey' | 'after' = 'value';
  let i = 0;
  for (;;) {
    i = skipWs(text, i);
    const c = text.charAt(i);
    if (state === 'value' || state === 'firstValue') {
      if (state === 'firstValue' && c === ']') {
        stack.pop();
        i++;
        state = 'after';
      } else if (c === '') {
        return { offset: i, message: `the text ends where a value was expected (${VALUE_HINT})` };
      } else if (c === '{' || c === '[') {
        stack.push(c);
        i++;
        state = c === '{' ? 'firstKey' : 'firstValue';
      } else if (c === '"') {
        const r = checkString(text, i);
        if (typeof r !== 'number') return r;
        i = r;
        state = 'after';
      } else {
        NUMBER.lastIndex = i;
        const literal = ['true', 'false', 'null'].find((w) => text.startsWith(w, i));
        if (literal) i += literal.length;
        else if (NUMBER.exec(text)) i = NUMBER.lastIndex;
        else {
          const quote = c === "'" ? ' (JSON strings take double quotes)' : '';
          return { offset: i, message: `unexpected text where a value was expected (${VALUE_HINT})${quote}` };
        }
        state = 'after';
      }
    } else if (state === 'key' || state === 'firstKey') {
      if (state === 'firstKey' && c === '}') {
        stack.pop();
        i++;
        state = 'after';
        continue;
      }
      if (c !== '"') {
        return {
          offset: i,
          message:
            state === 'key' && c === '}'
              ? 'a comma before "}": JSON allows no trailing comma'
              : 'expected a member name in double quotes',
        };
      }
      const r = checkString(text, i);
      if (typeof r !== 'number') return r;
      i = skipWs(text, r);
      if (text.charAt(i) !== ':') return { offset: i, message: 'expected ":" after the member name' };
      i++;
      state = 'value';
    } else {
      const top = stack[stack.length - 1];
      if (top === undefined) {
        return i < text.length
          ? { offset: i, message: 'more text after the end of the JSON value' }
          : undefined;
      }
      const close = top === '{' ? '}' : ']';
      if (c === ',') {
        i++;
        state = top === '{' ? 'key' : 'value';
        if (top === '[' && text.charAt(skipWs(text, i)) === ']') {
          return { offset: i - 1, message: 'a comma before "]": JSON allows no trailing comma' };
        }
      } else if (c === close) {
        stack.pop();
        i++;
      } else if (c === '') {
        return { offset: i, message: `the text ends before the closing "${close}"` };
      } else {
        return { offset: i, message: `expected "," or "${close}"` };
      }
    }
  }
}

/** Offset past a valid string starting at `i`, or the error in it. */
function checkString(text: string, i: number): number | JsonSyntaxError {
  let j = i + 1;
  for (;;) {
    if (j >= text.length) return { offset: i, message: 'a string that never ends (a missing closing ")' };
    const c = text.charCodeAt(j);
    if (c === 0x22) return j + 1;
    if (c < 0x20) {
      return {
        offset: j,
        message: 'a control character (such as a line break) inside a string: write it as \\n',
      };
    }
    if (c === 0x5c) {
      const e = text.charAt(j + 1);
      if (e === 'u') {
        if (!/^[0-9a-fA-F]{4}$/.test(text.slice(j + 2, j + 6))) {
          return { offset: j, message: 'a \\u escape needs four hex digits' };
        }
        j += 6;
      } else if ('"\\/bfnrt'.includes(e) && e !== '') {
        j += 2;
      } else {
        return { offset: j, message: 'an unknown escape in a string (a Windows path? write \\\\ for \\)' };
      }
    } else {
      j++;
    }
  }
}
