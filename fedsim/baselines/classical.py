"""The classical centralised baselines (PerFit's SVM, kNN, RF), by scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np

from fedsim.baselines.centralised import BaselineOptions, PooledData, Progress, method_seed


def fit_predict_sklearn(
    method: str, data: PooledData, rows: np.ndarray, opts: BaselineOptions, seed: int,
    threads: int, say: Progress | None = None,
) -> np.ndarray:  # fmt: skip
    """Fit ``method`` (svm, knn or rf) on the pooled rows, flattened; predict ``x_test[rows]``.

    ``svm``: standardisation, then ``LinearSVC`` (one-vs-rest, squared hinge, ``C``,
    scikit-learn's other defaults; ``say`` is told when it stops at its iteration cap);
    ``knn``: ``KNeighborsClassifier`` (Euclidean, uniform weights) on the inputs as they are;
    ``rf``: ``RandomForestClassifier`` (scikit-learn's defaults). Random states come from the
    scenario seed. BLAS and scikit-learn's workers are limited to ``threads``.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC
    from threadpoolctl import threadpool_limits

    ds = data.dataset
    state = method_seed(seed, method) % 2**32  # scikit-learn takes 32-bit seeds
    model = {
        "svm": lambda: make_pipeline(StandardScaler(), LinearSVC(C=opts.svm_c, random_state=state)),
        "knn": lambda: KNeighborsClassifier(n_neighbors=opts.knn_k, n_jobs=threads),
        "rf": lambda: RandomForestClassifier(
            n_estimators=opts.rf_trees, random_state=state, n_jobs=threads
        ),
    }[method]()
    x = ds.x_train[data.train_idx].reshape(len(data.train_idx), -1)
    with threadpool_limits(limits=threads):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(x, ds.y_train[data.train_idx])
        for w in caught:  # LinearSVC at its iteration cap: said once; anything else: shown
            if w.category is not ConvergenceWarning:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        if say is not None and any(w.category is ConvergenceWarning for w in caught):
            say(f"{method}: warning: stopped at the iteration cap before converging "
                "(a smaller --svm-c converges sooner)")  # fmt: skip
        if len(rows) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(model.predict(ds.x_test[rows].reshape(len(rows), -1)))
