// Walking cel-js's AST: shared by the compile-time checks and rewrites and by the cost estimator.

import type { ASTNode } from '@marcbachmann/cel-js';

export function children(node: ASTNode): readonly ASTNode[] {
  switch (node.op) {
    case 'value':
    case 'id':
      return [];
    case 'call':
      return node.args[1];
    case 'rcall':
      return [node.args[1], ...node.args[2]];
    case '.':
    case '.?':
      return [node.args[0]];
    case '!_':
    case '-_':
      return [node.args];
    case 'map':
      return node.args.flat();
    default:
      return Array.isArray(node.args) ? node.args : [];
  }
}
