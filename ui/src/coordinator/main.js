import { mount } from "svelte";
import "../lib/dashboard.css";
import App from "./App.svelte";

mount(App, { target: document.getElementById("app") });
