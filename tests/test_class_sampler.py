"""N-way K-shot tasks drawn on the device: their statistics, over many tasks."""

import jax
import jax.numpy as jnp
import numpy as np

from metajax.data.image_set import ImageSet
from metajax.tasks.class_sampler import class_pool, sample_classification_tasks


def numbered_set(sizes):
    """Images whose pixels say which they are: pixel (0, 0) is the class times 2, (0, 1) the
    index within the class times 2, and (1, 0) is 1 (so that a rotation shows)."""
    images, labels = [], []
    for label, size in enumerate(sizes):
        for index in range(size):
            image = np.zeros((4, 4, 1), dtype=np.uint8)
            image[0, 0, 0], image[0, 1, 0], image[1, 0, 0] = 2 * label, 2 * index, 1
            images.append(image)
            labels.append(label)
    classes = tuple(f"c{i}" for i in range(len(sizes)))
    return ImageSet(np.stack(images), np.array(labels, np.int32), classes, ("",) * len(sizes))


def decode(images):
    """Class and index of each image (as in numbered_set, unrotated)."""
    pixels = np.rint(np.asarray(images) * 255).astype(int)
    return pixels[..., 0, 0, 0] // 2, pixels[..., 0, 1, 0] // 2


def test_tasks_have_distinct_classes_permuted_labels_and_disjoint_images():
    sizes = [8, 5, 12, 6, 7, 9, 5, 10]
    pool = class_pool(numbered_set(sizes))
    ways, shots, query = 4, 2, 3
    tasks = jax.jit(sample_classification_tasks, static_argnums=(2, 3, 4, 5))(
        jax.random.key(0), pool, 2000, ways, shots, query
    )
    (support_x, support_y), (query_x, query_y) = tasks
    assert support_x.shape == (2000, ways * shots, 4, 4, 1) and support_x.dtype == jnp.float32
    assert query_x.shape == (2000, ways * query, 4, 4, 1)
    np.testing.assert_array_equal(support_y[0], np.repeat(np.arange(ways), shots))
    np.testing.assert_array_equal(query_y[0], np.repeat(np.arange(ways), query))
    support_class, support_index = decode(support_x)
    query_class, query_index = decode(query_x)
    # Each label is one class in a task, in support and query alike; the classes are distinct.
    by_label = support_class.reshape(2000, ways, shots)
    assert (by_label == by_label[..., :1]).all()
    assert (query_class.reshape(2000, ways, query) == by_label[..., :1]).all()
    task_classes = by_label[..., 0]
    assert all(len(set(row)) == ways for row in task_classes)
    # The images of a class in a task are distinct and exist.
    for t in range(0, 2000, 97):
        for label in range(ways):
            indices = np.concatenate(
                [
                    support_index[t].reshape(ways, shots)[label],
                    query_index[t].reshape(ways, query)[label],
                ]
            )
            assert len(set(indices)) == shots + query
            assert indices.max() < sizes[task_classes[t, label]]
    # Every class is drawn as often (4/8 of tasks each), under every label (1/8 of tasks).
    frequency = np.bincount(task_classes.ravel(), minlength=8) / 2000
    np.testing.assert_allclose(frequency, 0.5, atol=0.05)
    for label in range(ways):
        per_label = np.bincount(task_classes[:, label], minlength=8) / 2000
        np.testing.assert_allclose(per_label, 1 / 8, atol=0.03)
    # Images within a class are drawn uniformly: class 2's 12 images, each 5/12 of the time.
    drawn = np.concatenate(
        [
            np.where(support_class == 2, support_index, -1).ravel(),
            np.where(query_class == 2, query_index, -1).ravel(),
        ]
    )
    counts = np.bincount(drawn[drawn >= 0], minlength=12)
    np.testing.assert_allclose(counts / counts.mean(), 1, atol=0.1)


def test_rotations_are_classes_of_their_own():
    pool = class_pool(numbered_set([3, 3]), rotations=True)
    assert pool.num_classes == 8
    tasks = sample_classification_tasks(jax.random.key(1), pool, 400, 2, 1, 2)
    images = np.rint(np.asarray(tasks.support[0]) * 255).astype(int)[..., 0]
    marker = np.zeros((4, 4), dtype=bool)
    marker[1, 0] = True
    seen = set()
    for image in images.reshape(-1, 4, 4):
        # The marker pixel (1 at (1, 0); the class and index are 0 or 2 there) says how far
        # the image was turned.
        (turns,) = [k for k in range(4) if (np.rot90(marker, k) == (image == 1)).all()]
        unturned = np.rot90(image, -turns)
        assert unturned[1, 0] == 1
        seen.add((int(unturned[0, 0]) // 2, turns))
    assert seen == {(c, k) for c in range(2) for k in range(4)}


def test_query_sets_do_not_depend_on_the_shots():
    pool = class_pool(numbered_set([10] * 6))
    one = sample_classification_tasks(jax.random.key(2), pool, 50, 3, 1, 4)
    five = sample_classification_tasks(jax.random.key(2), pool, 50, 3, 5, 4)
    np.testing.assert_array_equal(one.query[0], five.query[0])
    # A 1-shot support set is the first image of each class of the 5-shot one.
    np.testing.assert_array_equal(
        one.support[0],
        np.asarray(five.support[0]).reshape(50, 3, 5, 4, 4, 1)[:, :, 0].reshape(50, 3, 4, 4, 1),
    )
