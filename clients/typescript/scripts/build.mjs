// Builds the package: copies the generated stubs (generated/ts, written by
// scripts/generate.sh) into src/gen, compiles the helpers with tsc, and puts
// the stubs next to them in dist/gen. Then compiles the examples (type-checked
// against the package as a user would import it).
import { cpSync, rmSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const generated = join(here, "..", "..", "generated", "ts");
const tsc = join(here, "node_modules", "typescript", "bin", "tsc");

for (const dir of ["dist", "dist-examples", join("src", "gen")]) {
  rmSync(join(here, dir), { recursive: true, force: true });
}
for (const tree of ["cortex", "google"]) {
  cpSync(join(generated, tree), join(here, "src", "gen", tree), { recursive: true });
}
execFileSync(process.execPath, [tsc, "-p", join(here, "tsconfig.json")], { stdio: "inherit" });
cpSync(join(here, "src", "gen"), join(here, "dist", "gen"), { recursive: true });
execFileSync(process.execPath, [tsc, "-p", join(here, "tsconfig.examples.json")], {
  stdio: "inherit",
});
