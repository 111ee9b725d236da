"""Services behind the routes: rendering, uploads, slots of an image, jobs, the prototype map."""
