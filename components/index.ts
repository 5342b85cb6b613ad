export * from "./xenGuest";
