// Loads the connect script from your linkvault (so that it knows its own origin) and resolves
// with its API, typed by index.d.ts. With `integrity`, the browser refuses any other bytes (SRI).
const loading = new Map();

export function loadConnect(options) {
  const baseUrl = String(options && options.baseUrl).replace(/\/$/, '');
  const src = `${baseUrl}/sdk/connect.v1.js`;
  if (window.linkvault && window.linkvault.origin === new URL(baseUrl).origin)
    return Promise.resolve(window.linkvault);
  let promise = loading.get(src);
  if (promise) return promise;
  promise = new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.async = true;
    script.crossOrigin = 'anonymous';
    if (options.integrity) script.integrity = options.integrity;
    script.onload = () =>
      window.linkvault
        ? resolve(window.linkvault)
        : reject(new Error('linkvault: the connect script did not load'));
    script.onerror = () => {
      loading.delete(src);
      script.remove();
      reject(new Error(`linkvault: could not load ${src}`));
    };
    document.head.appendChild(script);
  });
  loading.set(src, promise);
  return promise;
}
