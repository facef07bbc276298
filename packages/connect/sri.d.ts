/** The connect script exactly as a linkvault deployment at `publicUrl` serves it. `template` defaults to the packaged script. */
export declare function servedConnectScript(publicUrl: string, template?: string): string;
/** `sha384-<base64>`, for `<script integrity>`, of the script served at `publicUrl` (LINKVAULT_PUBLIC_URL). */
export declare function connectScriptIntegrity(publicUrl: string, template?: string): string;
