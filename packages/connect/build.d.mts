/** Copies the served script (src/web/connect.js) into `outDir` as connect.v1.js; returns its path. */
export declare function buildConnectPackage(outDir?: string): string;
/** docs/sdk.md's text with the SRI line for DOCS_EXAMPLE_URL brought up to date. */
export declare function documentedSdkMarkdown(markdown?: string): string;
export declare const SERVED_SCRIPT: string;
export declare const DOCS_EXAMPLE_URL: string;
