// The page's credential: the bearer token typed into the login field, kept in sessionStorage so
// that it survives a reload but not the browser session, and is never written anywhere else.
const STORAGE_KEY = "federated_trainer.token";

export const session = $state({
  token: sessionStorage.getItem(STORAGE_KEY) ?? "",
  // True once the service refused a call for want of a valid token: the page asks for one.
  refused: false,
});

export function signIn(token) {
  session.token = token.trim();
  session.refused = false;
  if (session.token) sessionStorage.setItem(STORAGE_KEY, session.token);
  else sessionStorage.removeItem(STORAGE_KEY);
}

export function signOut() {
  signIn("");
}
