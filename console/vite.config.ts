import { defineConfig } from "vite";

// The client package is a symlinked file: dependency; dedupe makes its imports of
// protobuf-es and Connect use the console's single copy (one ConnectError class).
export default defineConfig({
  base: "./",
  resolve: { dedupe: ["@bufbuild/protobuf", "@connectrpc/connect"] },
  esbuild: { jsx: "automatic" },
  build: { outDir: "dist", sourcemap: false, chunkSizeWarningLimit: 1024 },
});
