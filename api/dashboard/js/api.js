// The JSON API as the page calls it: the key only ever travels in the Authorization header.

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

async function problem(response) {
  let code = "http_" + response.status;
  let detail = `the API answered ${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string") detail = body.detail;
    if (body && typeof body.code === "string") code = body.code;
  } catch {
    // not problem+json: keep the status line
  }
  return new ApiError(response.status, code, detail);
}

export class Api {
  #key;

  constructor(key) {
    this.#key = key;
  }

  #request(path, params, accept) {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== "") query.set(name, value);
    }
    const url = query.toString() ? `${path}?${query}` : path;
    return fetch(url, {
      headers: { Authorization: `Bearer ${this.#key}`, Accept: accept },
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  }

  /** GET a JSON route; throws ApiError with the problem's status, code and detail. */
  async get(path, params) {
    let response;
    try {
      response = await this.#request(path, params, "application/json");
    } catch {
      throw new ApiError(0, "network", "the API could not be reached; check the connection");
    }
    if (!response.ok) throw await problem(response);
    return response.json();
  }

  /** GET a file route as a Blob (e.g. the CSV export), with the file name the API suggests. */
  async download(path, params) {
    let response;
    try {
      response = await this.#request(path, params, "text/csv");
    } catch {
      throw new ApiError(0, "network", "the API could not be reached; check the connection");
    }
    if (!response.ok) throw await problem(response);
    const disposition = response.headers.get("content-disposition") || "";
    const match = /filename="([^"]+)"/.exec(disposition);
    return { blob: await response.blob(), filename: match ? match[1] : "export.csv" };
  }
}
