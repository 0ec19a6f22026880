import type { Selection } from '@dts/document';
import type { Adapter, Entry } from '@dts/vfs';
import picomatch from 'picomatch';

/** Suffix of dts's temporary files; never listed as source files (they are someone's partial copy). */
export const PARTIAL_SUFFIX = '.dtspart';

export interface ListedFile {
  /** Path relative to the source directory, `/`-separated. */
  readonly rel: string;
  readonly entry: Entry;
}

export interface ListedDirectory {
  readonly rel: string;
}

/** A subdirectory that could not be listed; the walk goes on without it. */
export interface UnlistableDirectory {
  readonly rel: string;
  readonly error: unknown;
}

export type WalkItem = ListedFile | ListedDirectory | UnlistableDirectory;

export interface SelectionMatcher {
  /** Whether a file at this relative path is copied. */
  file(rel: string): boolean;
  /** Whether a directory at this relative path is descended into. */
  directory(rel: string): boolean;
  /** True when every file is selected (no Include): empty directories are recreated then. */
  readonly all: boolean;
}

export function selectionMatcher(select: Selection): SelectionMatcher {
  const opts = { dot: true } as const;
  const include = select.include.length > 0 ? picomatch([...select.include], opts) : undefined;
  const exclude = select.exclude.length > 0 ? picomatch([...select.exclude], opts) : undefined;
  return {
    all: include === undefined,
    file: (rel) => (include ? include(rel) : true) && !(exclude?.(rel) ?? false),
    // `tmp/**` excludes the directory `tmp` too, so it is not even listed.
    directory: (rel) => !(exclude?.(rel) || exclude?.(`${rel}/`) || exclude?.(`${rel}/x`)),
  };
}

/**
 * Walks a source directory depth-first, yielding selected files and the directories visited.
 * Streams: only the stack of directories still to visit is held, never the list of files, so a
 * tree of a million files walks in constant memory per directory level.
 */
export async function* walk(
  adapter: Adapter,
  root: string,
  matcher: SelectionMatcher,
  signal?: AbortSignal,
): AsyncGenerator<WalkItem> {
  const base = root.endsWith('/') ? root : `${root}/`;
  const stack: string[] = [''];
  while (stack.length > 0) {
    const rel = stack.pop() as string;
    if (rel !== '') yield { rel };
    try {
      for await (const entry of adapter.list(base + rel, signal)) {
        const childRel = rel === '' ? entry.name : `${rel}/${entry.name}`;
        if (entry.type === 'directory') {
          if (matcher.directory(childRel)) stack.push(childRel);
        } else if (entry.type === 'file') {
          if (entry.name.endsWith(PARTIAL_SUFFIX)) continue;
          if (matcher.file(childRel)) yield { rel: childRel, entry };
        }
      }
    } catch (error) {
      // The root failing fails the copy; one unreadable subdirectory fails only itself.
      if (rel === '' || signal?.aborted) throw error;
      yield { rel, error };
    }
  }
}

export function isFile(x: WalkItem): x is ListedFile {
  return 'entry' in x;
}

export function isUnlistable(x: WalkItem): x is UnlistableDirectory {
  return 'error' in x;
}
