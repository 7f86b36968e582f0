/**
 * No import cycles among the modules of cli/ and functions/: an entry point imports its subcommands
 * and shared modules, never the other way round. The graph is Deno's own (`deno info --json` from
 * every module, `import type` included), so what is checked is what Deno resolves.
 */
import { assert, assertEquals } from "./support/assert.ts";

const root = new URL("../", import.meta.url);
const dirs = ["cli", "functions"];

/** Every TypeScript module under `dir` (relative to the repository root), sorted. */
function modulesUnder(dir: string): string[] {
  const found: string[] = [];
  const walk = (rel: string) => {
    for (const entry of Deno.readDirSync(new URL(`${rel}/`, root))) {
      const path = `${rel}/${entry.name}`;
      if (entry.isDirectory) walk(path);
      else if (/\.tsx?$/.test(entry.name)) found.push(path);
    }
  };
  walk(dir);
  return found.sort();
}

type DenoInfo = {
  modules: { specifier: string; dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[] }[];
};

/** The import graph among the modules under `dirs`: module path -> the paths it imports (value and type imports). */
async function importGraph(entries: string[]): Promise<Map<string, Set<string>>> {
  const prefixes = dirs.map((d) => new URL(`${d}/`, root).href);
  const local = (specifier: string) => prefixes.some((p) => specifier.startsWith(p));
  const name = (specifier: string) => specifier.slice(root.href.length);
  const graph = new Map<string, Set<string>>();
  for (const entry of entries) {
    if (graph.has(entry)) continue; // already reached from an earlier entry, with all it imports
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", entry],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(out.success, `deno info ${entry}: ${new TextDecoder().decode(out.stderr)}`);
    const info: DenoInfo = JSON.parse(new TextDecoder().decode(out.stdout));
    for (const m of info.modules) {
      if (!local(m.specifier)) continue;
      const edges = graph.get(name(m.specifier)) ?? new Set<string>();
      for (const d of m.dependencies ?? []) {
        for (const target of [d.code?.specifier, d.type?.specifier]) {
          if (target && local(target)) edges.add(name(target));
        }
      }
      graph.set(name(m.specifier), edges);
    }
  }
  return graph;
}

/**
 * The import cycles a depth-first search of `graph` meets, one per back edge, each as the path round
 * it (a -> b -> a): [] exactly when the graph has no cycle.
 */
function findCycles(graph: Map<string, Set<string>>): string[][] {
  const cycles: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (node: string) => {
    state.set(node, "open");
    path.push(node);
    for (const next of [...(graph.get(node) ?? [])].sort()) {
      if (state.get(next) === "open") cycles.push([...path.slice(path.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    path.pop();
    state.set(node, "done");
  };
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return cycles;
}

Deno.test("the cycle finder finds a cycle, a longer one and a self-import, and passes a tree", () => {
  const g = (edges: Record<string, string[]>) => new Map(Object.entries(edges).map(([k, v]) => [k, new Set(v)]));
  assertEquals(findCycles(g({ a: ["b"], b: ["c"], c: [] })), []);
  assertEquals(findCycles(g({ a: ["b", "c"], b: ["c"], c: [] })), []);
  assertEquals(findCycles(g({ a: ["b"], b: ["a"] })), [["a", "b", "a"]]);
  assertEquals(findCycles(g({ main: ["sub"], sub: ["util"], util: ["main"] })), [["main", "sub", "util", "main"]]);
  assertEquals(findCycles(g({ a: ["a"] })), [["a", "a"]]);
});

Deno.test("no module of cli/ or functions/ imports, directly or through others, one that imports it", async () => {
  const entries = dirs.flatMap(modulesUnder);
  assert(entries.includes("cli/email_status.ts") && entries.includes("functions/email-worker/index.ts"));
  const graph = await importGraph(entries);
  assertEquals(graph.size, entries.length, "deno info reached every module");
  const cycles = findCycles(graph);
  assertEquals(cycles.map((c) => c.join(" -> ")), [], "import cycles");
});
