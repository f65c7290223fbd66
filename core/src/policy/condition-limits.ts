// The limits that compiling, converting input, matching and costing all enforce or assume. Apart from
// conditions.ts so that those parts can import them without an import cycle.

export const CONDITION_LIMITS = Object.freeze({
  maxSourceLength: 4096,
  /**
   * Wall-clock backstop for conditions that iterate (macros) or bind, whose cost the estimate already bounds;
   * see `CostEstimator`. Wall-clock, so a heavily loaded host can hit it with an ordinary condition:
   * `limits.conditionTimeoutMs`.
   */
  timeoutMs: 100,
  maxAstNodes: 1024,
  /** Nesting of calls, selects, indexes and aggregates; also keeps the recursive checker off the stack limit. */
  maxDepth: 32,
  /**
   * Most steps a condition may cost on the worst input the limits below allow (about one cel-js AST node
   * evaluation each, 0.1 to 0.2 µs); more is a compile error. See `STEP` for what else counts.
   */
  maxCost: 100_000,
  /** Longest string a condition can read (any field, claim, attribute or list element); longer fails closed. */
  maxStringLength: 8_192,
  /** Most elements of any list, or members of any map, a condition can read; more fails closed. */
  maxListLength: 256,
  /**
   * Most values plus characters in the claims, in the attributes, and in each list field of one input
   * (audiences, scopes), counting everything nested; more fails closed. What lets a loop amortize.
   */
  maxCollectionSize: 32_768,
  /** `request.chain`: delegation.maxChainDepth is at most 32; a longer chain fails closed. */
  maxChainLength: 32,
  /** Longest `matches` pattern computed at run time; a literal pattern is compiled, and costed, at load. */
  maxPatternLength: 1_024,
  /** Longest string `duration()` parses: cel-js's parser backtracks, cubic in the length. */
  maxDurationLength: 32,
});
