// The three dashboards as one multi-page build sharing src/lib: each party serves its own page
// from ../dashboard/dist (model_creator.html, coordinator.html, data_owner.html) and the shared
// assets/. Asset names are content hashes and nothing depends on the build's time or directory,
// so the same sources always give the same bytes (scripts/check_dashboard_build.sh relies on it).
import { resolve } from "node:path";
import { defineConfig } from "vite";
import { svelte } from "@sveltejs/vite-plugin-svelte";

const here = import.meta.dirname;

export default defineConfig({
  root: here,
  // Relative asset URLs: a page works wherever its party mounts it.
  base: "./",
  plugins: [svelte()],
  build: {
    outDir: resolve(here, "../dashboard/dist"),
    emptyOutDir: true,
    modulePreload: { polyfill: false },
    rollupOptions: {
      // The code and style every page shares are named for what they are, not for their first module.
      output: {
        chunkFileNames: "assets/shared-[hash].js",
        assetFileNames: "assets/dashboard-[hash][extname]",
      },
      input: {
        model_creator: resolve(here, "model_creator.html"),
        coordinator: resolve(here, "coordinator.html"),
        data_owner: resolve(here, "data_owner.html"),
      },
    },
  },
});
