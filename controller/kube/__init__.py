"""The controller's Kubernetes side: `client` is the one module that imports the Kubernetes client;
the others (reflector, store, view, events, pools, wiring) go through it."""
