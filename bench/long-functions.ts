// The longest function bodies in src/ and native/: every function-like node with a block body
// (declarations, methods, constructors, accessors, arrows, function expressions), counted in
// lines from its `{` to its `}`, through TypeScript 7's AST API (typescript/unstable/sync).
// `node dist/bench/long-functions.js [over=40] [show=10]`; prints the count over `over` lines
// and the `show` longest.

import { type Node, type SourceFile, SyntaxKind } from 'typescript/unstable/ast';
import { API } from 'typescript/unstable/sync';

const root = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
const over = Number(process.argv[2] ?? 40),
  show = Number(process.argv[3] ?? 10);
const FUNCTIONS = new Set([
  SyntaxKind.FunctionDeclaration,
  SyntaxKind.MethodDeclaration,
  SyntaxKind.Constructor,
  SyntaxKind.GetAccessor,
  SyntaxKind.SetAccessor,
  SyntaxKind.ArrowFunction,
  SyntaxKind.FunctionExpression,
]);
type Named = Node & { name?: Node; body?: Node };

/** `Class.method`, `function`, `const name = () => ...`, or where an anonymous one starts. */
function nameOf(n: Named, sf: SourceFile): string {
  let cls = '';
  for (let p = n.parent; p; p = p.parent)
    if (p.kind === SyntaxKind.ClassDeclaration || p.kind === SyntaxKind.ClassExpression) {
      const c = (p as Named).name;
      cls = `${c ? c.getText(sf) : '(class)'}.`;
      break;
    }
  if (n.kind === SyntaxKind.Constructor) return `${cls}constructor`;
  const named = n.name ?? (n.parent as Named | undefined)?.name;
  if (named) return cls + named.getText(sf);
  return `(anonymous @${sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1})`;
}

const api = new API({ cwd: root });
const program = api
  .updateSnapshot({ openProjects: [`${root}/tsconfig.json`] })
  .getProjects()[0]!.program;
const rows: { lines: number; name: string; at: string }[] = [];
for (const file of program.getSourceFileNames()) {
  const rel = file.slice(root.length + 1);
  if (!file.startsWith(`${root}/`) || !/^(src|native)\//.test(rel)) continue;
  const sf = program.getSourceFile(file)!;
  const visit = (n: Node): void => {
    const body = (n as Named).body;
    if (FUNCTIONS.has(n.kind) && body?.kind === SyntaxKind.Block) {
      const first = sf.getLineAndCharacterOfPosition(body.getStart(sf)).line;
      const last = sf.getLineAndCharacterOfPosition(body.end).line;
      rows.push({
        lines: last - first + 1,
        name: nameOf(n as Named, sf),
        at: `${rel}:${first + 1}`,
      });
    }
    n.forEachChild(visit);
  };
  sf.forEachChild(visit);
}
api.close();
rows.sort((a, b) => b.lines - a.lines);
console.log(
  `${rows.length} functions, ${rows.filter((r) => r.lines > over).length} over ${over} lines`,
);
for (const r of rows.slice(0, show))
  console.log(`${String(r.lines).padStart(4)}  ${r.name}  ${r.at}`);
