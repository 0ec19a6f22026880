/** Line and column (1-based; columns count UTF-16 code units) of offsets in one text. */
export class LineIndex {
  private starts: number[] | undefined;

  constructor(private readonly text: string) {}

  position(offset: number): { line: number; column: number } {
    const starts = this.lineStarts();
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((starts[mid] ?? 0) <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, column: offset - (starts[lo] ?? 0) + 1 };
  }

  /** The offset where a 1-based line starts (for turning libxml2's line/column into an offset). */
  lineStart(line: number): number {
    const starts = this.lineStarts();
    return starts[Math.min(Math.max(line, 1), starts.length) - 1] ?? 0;
  }

  private lineStarts(): number[] {
    if (this.starts) return this.starts;
    // A line ends at \n, \r\n or a lone \r, as XML (and so libxml2) counts them.
    const starts = [0];
    const re = /\r\n?|\n/g;
    for (let m = re.exec(this.text); m; m = re.exec(this.text)) starts.push(m.index + m[0].length);
    this.starts = starts;
    return starts;
  }
}
